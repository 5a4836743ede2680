"""Credentials for API requests: bearer token / tokenFile, basic auth, exec credential plugins
(client.authentication.k8s.io v1 and v1beta1) and in-cluster service-account tokens.

Exec results are cached process-wide until their expirationTimestamp and dropped when the server
answers 401, so the plugin runs again once (client-go's behaviour). Secrets never reach logs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from dataclasses import dataclass

from fastpf.client.kubeconfig import ClientConfig, ExecConfig
from fastpf.errors import ClientError
from fastpf.goparity import parse_rfc3339

EXEC_TIMEOUT = 120.0  # a plugin may open a browser for login; still bounded
TOKEN_FILE_TTL = 60.0
FRESH_GRACE = 1.0  # seconds a just-fetched exec credential counts as valid  # client-go re-reads tokenFile once a minute (rotated SA tokens)
# net/http's httpguts.ValidHeaderFieldValue: no control characters but horizontal tab.
_INVALID_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_EXEC_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


@dataclass
class ExecResult:
    token: str | None
    cert: bytes | None
    key: bytes | None
    expires: float | None  # epoch seconds; None = until a 401
    fetched: float = 0.0  # monotonic time of the plugin run

    def valid(self) -> bool:
        # A credential that arrives already expired still serves the request that asked for
        # it (token and client cert are both read per request), or the plugin would loop.
        if time.monotonic() - self.fetched < FRESH_GRACE:
            return True
        return self.expires is None or time.time() < self.expires


_exec_cache: dict[str, ExecResult] = {}
exec_runs = 0  # how often a plugin was started (tests assert caching)


def _exec_key(ex: ExecConfig) -> str:
    return json.dumps([ex.command, ex.args, ex.env, ex.api_version], sort_keys=True)


class Authenticator:
    def __init__(self, cfg: ClientConfig, *, secure: bool) -> None:
        self.cfg = cfg
        # kubectl (clientcmd) uses user credentials only over TLS; plain http gets none.
        self.enabled = secure
        self._token_cache: tuple[float, str] | None = None
        # Asked on every upgrade connection: the cache key is computed once per ExecConfig.
        self._exec_key_for: tuple[ExecConfig, str] | None = None

    @property
    def uses_exec(self) -> bool:
        return self.enabled and self.cfg.exec is not None

    async def authorization(self) -> str | None:
        """The Authorization header value, or None. A value HTTP cannot carry (a token with
        CR, LF or another control character) is refused here, as Go's net/http does, before
        anything is sent."""
        value = await self._authorization()
        if value is not None and _INVALID_VALUE.search(value):
            raise ClientError(
                'net/http: invalid header field value for "Authorization"',
                prefix="Unable to connect to the server: ",
            )
        return value

    async def _authorization(self) -> str | None:
        if not self.enabled:
            return None
        cfg = self.cfg
        if cfg.exec is not None:
            res = await self._exec()
            if res.token:
                return f"Bearer {res.token}"
            return None
        if cfg.token:
            return f"Bearer {cfg.token}"
        if cfg.token_file:
            return f"Bearer {self._read_token_file(cfg.token_file)}"
        if cfg.username is not None or cfg.password is not None:
            raw = f"{cfg.username or ''}:{cfg.password or ''}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return None

    async def client_cert(self) -> tuple[bytes, bytes] | None:
        """Client certificate from an exec plugin (kubeconfig certs are handled by tlsconfig)."""
        if not self.enabled or self.cfg.exec is None:
            return None
        res = await self._exec()
        if res.cert and res.key:
            return res.cert, res.key
        return None

    def unauthorized(self) -> bool:
        """The server said 401: forget cached plugin output. True if a retry may help."""
        if self.uses_exec and self.cfg.exec is not None:
            _exec_cache.pop(self._key(self.cfg.exec), None)
            return True
        if self.cfg.token_file:
            self._token_cache = None
        return False

    def _key(self, ex: ExecConfig) -> str:
        cached = self._exec_key_for
        if cached is None or cached[0] is not ex:
            cached = self._exec_key_for = (ex, _exec_key(ex))
        return cached[1]

    def _read_token_file(self, path: str) -> str:
        now = time.monotonic()
        if self._token_cache and now - self._token_cache[0] < TOKEN_FILE_TTL:
            return self._token_cache[1]
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ClientError(
                f"open {path}: {(exc.strerror or '').lower()}",
                prefix="Unable to connect to the server: ",
            ) from None
        self._token_cache = (now, token)
        return token

    async def _exec(self) -> ExecResult:
        ex = self.cfg.exec
        assert ex is not None
        key = self._key(ex)
        cached = _exec_cache.get(key)
        if cached is not None and cached.valid():
            return cached
        res = await self._run_plugin(ex)
        _exec_cache[key] = res
        return res

    async def _run_plugin(self, ex: ExecConfig) -> ExecResult:
        global exec_runs
        fail = "Unable to connect to the server: "
        version = ex.api_version
        if version not in _EXEC_VERSIONS:
            raise ClientError(
                f'getting credentials: exec plugin: invalid apiVersion "{version}"', prefix=fail
            )
        spec: dict[str, object] = {"interactive": False}
        if ex.provide_cluster_info:
            spec["cluster"] = dict(self.cfg.cluster_info)
        info = {"kind": "ExecCredential", "apiVersion": version, "spec": spec}
        env = dict(os.environ)
        for item in ex.env:
            env[item["name"]] = item["value"]
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        exec_runs += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                ex.command,
                *ex.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=None,  # plugin's stderr goes to the user
            )
        except FileNotFoundError:
            hint = f"\n\n{ex.install_hint}" if ex.install_hint else ""
            raise ClientError(
                f"getting credentials: exec: executable {ex.command} not found{hint}", prefix=fail
            ) from None
        except OSError as exc:
            raise ClientError(f"getting credentials: exec: {exc.strerror}", prefix=fail) from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise ClientError("getting credentials: exec: plugin timed out", prefix=fail) from None
        if proc.returncode != 0:
            raise ClientError(
                f"getting credentials: exec: executable {ex.command} failed with exit code "
                f"{proc.returncode}",
                prefix=fail,
            )
        try:
            cred = json.loads(out)
        except ValueError:
            raise ClientError(
                "getting credentials: decoding stdout: invalid JSON", prefix=fail
            ) from None
        if not isinstance(cred, dict) or cred.get("kind") != "ExecCredential":
            raise ClientError(
                "getting credentials: exec plugin did not return an ExecCredential", prefix=fail
            )
        if cred.get("apiVersion") != version:
            raise ClientError(
                f"getting credentials: exec plugin is configured to use API version {version}, "
                f"plugin returned version {cred.get('apiVersion')}",
                prefix=fail,
            )
        status = cred.get("status") or {}
        token = status.get("token") or None
        cert = status.get("clientCertificateData")
        key = status.get("clientKeyData")
        if not token and not (cert and key):
            raise ClientError(
                "getting credentials: exec plugin didn't return a token or cert/key pair",
                prefix=fail,
            )
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = parse_rfc3339(str(status["expirationTimestamp"]))
            except ValueError:
                expires = None
        return ExecResult(
            token=token,
            cert=cert.encode() if cert else None,
            key=key.encode() if key else None,
            expires=expires,
            fetched=time.monotonic(),
        )


def reset_exec_cache() -> None:
    """Tests: forget every cached plugin result."""
    global exec_runs
    _exec_cache.clear()
    exec_runs = 0


__all__ = ["Authenticator", "ExecResult", "reset_exec_cache"]
