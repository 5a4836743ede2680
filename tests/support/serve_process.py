"""`fastpf serve` as a child process: `start_serve` (the `serve` / `serve_factory` fixtures
call it) and `RestartableServe` (killed and restarted on the same port with the same token and
--tls-dir, for the reconnect / pool / fault tests).

`start_serve(tmp, *args, manifest=None, tls=True, env=None, listen="127.0.0.1:0")` runs
`python -m fastpf serve --listen ... --kubeconfig-out ...` (with `--pod-address 127.0.0.1`
unless the test gives its own: the pod stand-ins listen there; serve's own default is
127.0.0.2) and waits for its kubeconfig. A `ServeInstance` has `.url`, `.host`, `.port`,
`.kubeconfig`, `.token`, `.ca_file`, `.process`, `.config` (parsed kubeconfig),
`.stdout_text()` / `.stderr_text()`, `.ssl_context(alpn=None)`, `.connection()`,
`.get(path, token="", method="GET", headers=None) -> (status, headers, body)`,
`.get_json(path)` and `.stop(sig)` -> exit code.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import stop_process, subprocess_env

START_TIMEOUT = 30.0
TOKEN = "resilience-token-3f9c2d"  # RestartableServe's fixed token


@dataclass
class ServeInstance:
    process: subprocess.Popen[bytes]
    kubeconfig: Path
    url: str
    host: str
    port: int
    token: str
    ca_file: Path | None
    stdout_path: Path
    stderr_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext | None:
        """Client context trusting this server's CA (None for --no-tls)."""
        if self.ca_file is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.ca_file is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPSConnection(
            self.host, self.port, timeout=timeout, context=self.ssl_context()
        )

    def get(
        self,
        path: str,
        token: str | None = "",
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.1 request; token "" = this server's token, None = no Authorization."""
        conn = self.connection()
        try:
            all_headers = dict(headers or {})
            if token is not None:
                all_headers["Authorization"] = f"Bearer {token or self.token}"
            conn.request(method, path, headers=all_headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, body = self.get(path, **kw)
        return status, json.loads(body)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return stop_process(self.process, sig)


def start_serve(
    tmp: Path,
    *args: str,
    manifest: str | None = None,
    tls: bool = True,
    env: dict[str, str] | None = None,
    listen: str = "127.0.0.1:0",
) -> ServeInstance:
    """Start `fastpf serve` and wait until its kubeconfig exists. Raises on failure."""
    tmp.mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(tempfile.mkdtemp(prefix="serve-", dir=tmp)) / "kubeconfig"
    cmd = [
        sys.executable,
        "-m",
        "fastpf",
        "serve",
        "--listen",
        listen,
        "--kubeconfig-out",
        str(kubeconfig),
    ]
    if manifest is not None:
        manifest_path = kubeconfig.parent / "manifest.yaml"
        manifest_path.write_text(manifest)
        cmd += ["-f", str(manifest_path)]
    if not tls:
        cmd.append("--no-tls")
    cmd += list(args)
    if "--pod-address" not in args:
        cmd += ["--pod-address", "127.0.0.1"]  # where the `targets` stand-ins listen
    stdout_path = kubeconfig.parent / "stdout.txt"
    stderr_path = kubeconfig.parent / "stderr.txt"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=str(tmp),
            env=subprocess_env(env),
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if kubeconfig.exists():
            break
        if proc.poll() is not None:
            raise RuntimeError(
                f"fastpf serve exited {proc.returncode}: {stderr_path.read_text().strip()}"
            )
        time.sleep(0.02)
    else:
        stop_process(proc, signal.SIGKILL)
        raise RuntimeError(
            f"fastpf serve wrote no kubeconfig within {START_TIMEOUT}s: {stderr_path.read_text()}"
        )
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    url = cluster["server"]
    m = re.match(r"^https?://(\[[^\]]+\]|[^:/]+):(\d+)$", url)
    assert m, url
    ca_file: Path | None = None
    if "certificate-authority-data" in cluster:
        ca_file = kubeconfig.parent / "ca.pem"
        ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return ServeInstance(
        process=proc,
        kubeconfig=kubeconfig,
        url=url,
        host=m.group(1).strip("[]"),
        port=int(m.group(2)),
        token=config["users"][0]["user"]["token"],
        ca_file=ca_file,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        config=config,
    )


class RestartableServe:
    """`fastpf serve` on a fixed port with a fixed token and certificate directory."""

    def __init__(
        self,
        tmp: Path,
        *args: str,
        manifest: str | None = None,
        tls: bool = True,
        token: str | None = TOKEN,
    ) -> None:
        self.tmp = tmp
        self.tls = tls
        self.token = token
        self.base = [
            *(["--token", token] if token else []),
            *(["--tls-dir", str(tmp / "tls")] if tls else []),
            *args,
        ]
        self.count = 0
        self.inst: ServeInstance = self._start(self.base, manifest, "127.0.0.1:0")
        self.port = self.inst.port
        self.kubeconfig = self.inst.kubeconfig
        self.started: list[ServeInstance] = [self.inst]

    def _start(self, args: list[str], manifest: str | None, listen: str) -> ServeInstance:
        self.count += 1
        return start_serve(
            self.tmp / f"serve{self.count}", *args, manifest=manifest, tls=self.tls, listen=listen
        )

    @property
    def pid(self) -> int:
        return self.inst.process.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.inst.process.wait(10)

    def restart(self, *args: str, manifest: str | None = None, token: str | None = None) -> float:
        """Start again on the same port; returns the monotonic time it was serving."""
        base = list(self.base)
        if token is not None:
            base[base.index("--token") + 1] = token
        for _ in range(50):  # the port may linger a moment after a SIGKILL
            try:
                self.inst = self._start([*base, *args], manifest, f"127.0.0.1:{self.port}")
                break
            except RuntimeError as exc:
                if "address already in use" not in str(exc).lower():
                    raise
                time.sleep(0.1)
        self.started.append(self.inst)
        return time.monotonic()

    def close(self) -> None:
        for inst in self.started:
            if inst.process.poll() is None:
                os.kill(inst.process.pid, signal.SIGCONT)  # a stopped one must see SIGTERM
            stop_process(inst.process)
