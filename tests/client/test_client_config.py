"""kubeconfig loading/merging, every auth kind, TLS settings, proxies and the REST client,
against a tiny in-test HTTPS server (tests/support/fake_api.py: MiniApi)."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import yaml

from fastpf.client import auth as A
from fastpf.client import kubeconfig as K
from fastpf.client.api import ApiClient, status_error
from fastpf.client.args import parse_args
from fastpf.client.resolve import _ts, resolve
from fastpf.errors import ClientError
from fastpf.loop import run
from fastpf.types import ConfigOverrides
from tests.support.fake_api import MiniApi, pod_json
from tests.support.pki import Pki, make_pki, write
from tests.support.proxies import Proxy

POD = "/api/v1/namespaces/default/pods/p"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def kubeconfig(
    path: str,
    server: str,
    user: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    namespace: str = "default",
    name: str = "c",
) -> str:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": name, "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
    }
    return write(path, yaml.safe_dump(cfg))


def with_server(tmp_path: Any, api: MiniApi, body: Callable[[MiniApi], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        await api.start(str(tmp_path))
        try:
            return await body(api)
        finally:
            await api.stop()

    return run(go())


async def get_pod(kc: str, *extra: str) -> Any:
    opts = parse_args(["--kubeconfig", kc, *extra, "p", "80"])
    client = ApiClient(K.load_config(opts.config_overrides()))
    try:
        return await client.get(POD)
    finally:
        await client.close()


def ca_b64(pki: Pki) -> str:
    return base64.b64encode(pki.ca_pem).decode()


def test_token_and_http_rule(tmp_path: Any, pki: Pki) -> None:
    api = MiniApi(pki=pki, tokens={"t0k"}, routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"),
            api.url,
            {"token": "t0k"},
            {"certificate-authority-data": ca_b64(pki)},
        )
        assert (await get_pod(kc))["metadata"]["name"] == "p"
        seen = api.seen[-1]
        assert seen.headers["authorization"] == "Bearer t0k"
        assert seen.headers["user-agent"].startswith("fastpf/")
        # --token overrides the kubeconfig's credential
        with pytest.raises(ClientError) as ei:
            await get_pod(kc, "--token", "wrong")
        assert ei.value.line == "error: You must be logged in to the server (Unauthorized)"

    with_server(tmp_path, api, body)

    # kubectl sends no credentials over plain http
    plain = MiniApi(routes={POD: (200, pod_json("p"))})

    async def body2(api: MiniApi) -> None:
        kc = kubeconfig(str(tmp_path / "kc2"), api.url, {"token": "secret"})
        await get_pod(kc)
        assert "authorization" not in api.seen[-1].headers

    with_server(tmp_path, plain, body2)


def test_token_file_relative(tmp_path: Any, pki: Pki) -> None:
    api = MiniApi(pki=pki, tokens={"from-file"}, routes={POD: (200, pod_json("p"))})
    sub = tmp_path / "conf"
    sub.mkdir()
    write(str(sub / "tok"), "from-file\n")
    write(str(sub / "ca.crt"), pki.ca_pem)

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(sub / "kc"), api.url, {"tokenFile": "tok"}, {"certificate-authority": "ca.crt"}
        )
        await get_pod(kc)
        assert api.seen[-1].headers["authorization"] == "Bearer from-file"

    with_server(tmp_path, api, body)


@pytest.mark.parametrize("as_data", [False, True])
def test_client_certificate(tmp_path: Any, pki: Pki, as_data: bool) -> None:
    api = MiniApi(pki=pki, require_client_cert=True, routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        if as_data:
            user = {
                "client-certificate-data": base64.b64encode(pki.client_cert).decode(),
                "client-key-data": base64.b64encode(pki.client_key).decode(),
            }
        else:
            user = {
                "client-certificate": write(str(tmp_path / "c.crt"), pki.client_cert),
                "client-key": write(str(tmp_path / "c.key"), pki.client_key),
            }
        kc = kubeconfig(
            str(tmp_path / "kc"), api.url, user, {"certificate-authority-data": ca_b64(pki)}
        )
        await get_pod(kc)
        assert api.seen[-1].peer_cn == "alice"
        assert "authorization" not in api.seen[-1].headers

    with_server(tmp_path, api, body)
    # key material passed as data leaves no file behind in the temp dir
    leftovers = [
        n
        for n in os.listdir(os.environ.get("TMPDIR", "/tmp"))
        if n.startswith("fastpf-") and os.path.exists(os.path.join("/tmp", n, "client.key"))
    ]
    assert leftovers == []


def test_basic_auth(tmp_path: Any, pki: Pki) -> None:
    api = MiniApi(pki=pki, basic="bob:s3cret", routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"),
            api.url,
            {"username": "bob", "password": "s3cret"},
            {"certificate-authority-data": ca_b64(pki)},
        )
        await get_pod(kc)
        assert api.seen[-1].headers["authorization"].startswith("Basic ")

    with_server(tmp_path, api, body)


def _plugin(tmp_path: Any, version: str, expires: str | None, tokens: list[str]) -> str:
    """An exec plugin that prints tokens[n] on its n-th run (last one repeated)."""
    counter = tmp_path / "runs"
    script = tmp_path / "plugin.py"
    exp = f', "expirationTimestamp": "{expires}"' if expires else ""
    script.write_text(f"""#!{sys.executable}
import json, os
n = int(open({str(counter)!r}).read()) if os.path.exists({str(counter)!r}) else 0
open({str(counter)!r}, "w").write(str(n + 1))
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
assert info["apiVersion"] == {version!r} and info["kind"] == "ExecCredential"
assert os.environ["FOO"] == "bar"
tokens = {tokens!r}
print(json.dumps({{"apiVersion": {version!r}, "kind": "ExecCredential",
                   "status": {{"token": tokens[min(n, len(tokens) - 1)]{exp}}}}}))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize(
    "version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
def test_exec_plugin_cache_and_401(tmp_path: Any, pki: Pki, version: str) -> None:
    A.reset_exec_cache()
    api = MiniApi(pki=pki, tokens={"good"}, routes={POD: (200, pod_json("p"))})
    # first run returns a stale token the server rejects: 401 -> plugin runs again -> good
    script = _plugin(tmp_path, version, "2999-01-01T00:00:00Z", ["stale", "good"])

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"),
            api.url,
            {
                "exec": {
                    "apiVersion": version,
                    "command": script,
                    "args": [],
                    "interactiveMode": "Never",
                    "env": [{"name": "FOO", "value": "bar"}],
                }
            },
            {"certificate-authority-data": ca_b64(pki)},
        )
        opts = parse_args(["--kubeconfig", kc, "p", "80"])
        client = ApiClient(K.load_config(opts.config_overrides()))
        try:
            for _ in range(3):
                await client.get(POD)
        finally:
            await client.close()
        assert A.exec_runs == 2  # stale, then good; then cached until expiry
        assert [s.headers["authorization"] for s in api.seen] == [
            "Bearer stale",
            "Bearer good",
            "Bearer good",
            "Bearer good",
        ]

    with_server(tmp_path, api, body)


def test_exec_plugin_expiry(tmp_path: Any, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    A.reset_exec_cache()
    monkeypatch.setattr(A, "FRESH_GRACE", 0.05)
    api = MiniApi(pki=pki, routes={POD: (200, pod_json("p"))})
    version = "client.authentication.k8s.io/v1"
    script = _plugin(tmp_path, version, "2000-01-01T00:00:00.123456789Z", ["a", "b", "c"])

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"),
            api.url,
            {
                "exec": {
                    "apiVersion": version,
                    "command": script,
                    "interactiveMode": "Never",
                    "env": [{"name": "FOO", "value": "bar"}],
                }
            },
            {"certificate-authority-data": ca_b64(pki)},
        )
        await get_pod(kc)
        await asyncio.sleep(0.1)
        await get_pod(kc)
        assert A.exec_runs == 2  # already expired: no caching

    with_server(tmp_path, api, body)


def test_exec_plugin_missing(tmp_path: Any, pki: Pki) -> None:
    A.reset_exec_cache()
    api = MiniApi(pki=pki)

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"),
            api.url,
            {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1",
                    "command": "no-such-plugin-xyz",
                    "interactiveMode": "Never",
                    "installHint": "install it",
                }
            },
            {"certificate-authority-data": ca_b64(pki)},
        )
        with pytest.raises(ClientError) as ei:
            await get_pod(kc)
        assert ei.value.line.startswith(
            "Unable to connect to the server: getting credentials: "
            "exec: executable no-such-plugin-xyz not found"
        )

    with_server(tmp_path, api, body)


def test_tls_verification(tmp_path: Any, pki: Pki) -> None:
    api = MiniApi(pki=pki, routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        bad = base64.b64encode(pki.other_ca_pem).decode()
        kc = kubeconfig(str(tmp_path / "kc"), api.url, {}, {"certificate-authority-data": bad})
        with pytest.raises(ClientError) as ei:
            await get_pod(kc)
        assert ei.value.line == (
            "Unable to connect to the server: tls: failed to verify "
            "certificate: x509: certificate signed by unknown authority"
        )
        await get_pod(kc, "--insecure-skip-tls-verify")
        good = kubeconfig(
            str(tmp_path / "kc2"),
            api.url,
            {},
            {"certificate-authority-data": ca_b64(pki), "tls-server-name": "api.test"},
        )
        await get_pod(good)
        with pytest.raises(ClientError, match="tls: failed to verify certificate"):
            await get_pod(good, "--tls-server-name", "wrong.test")
        cafile = write(str(tmp_path / "ca.pem"), pki.ca_pem)
        await get_pod(kc, "--certificate-authority", cafile)

    with_server(tmp_path, api, body)


@pytest.mark.parametrize(
    "kind,auth", [("http", None), ("http", "u:p"), ("socks5", None), ("socks5", "u:p")]
)
def test_proxy_url(tmp_path: Any, pki: Pki, kind: str, auth: str | None) -> None:
    api = MiniApi(pki=pki, routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        proxy = await Proxy(kind=kind, auth=auth).start()
        try:
            kc = kubeconfig(
                str(tmp_path / "kc"),
                api.url,
                {},
                {"certificate-authority-data": ca_b64(pki), "proxy-url": proxy.url},
            )
            await get_pod(kc)
            assert proxy.targets == [f"127.0.0.1:{api.port}"]
            # the upgrade path gets a socket through the same proxy
            opts = parse_args(["--kubeconfig", kc, "p", "80"])
            client = ApiClient(K.load_config(opts.config_overrides()))
            dialer = await client.dialer()
            assert dialer.open_socket is not None and dialer.ssl is not None
            sock = await dialer.open_socket()
            sock.close()
            assert len(proxy.targets) == 2
        finally:
            await proxy.stop()

    with_server(tmp_path, api, body)


def test_proxy_refused_auth(tmp_path: Any, pki: Pki) -> None:
    api = MiniApi(pki=pki, routes={POD: (200, pod_json("p"))})

    async def body(api: MiniApi) -> None:
        proxy = await Proxy(kind="http", auth="u:p").start()
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            kc = kubeconfig(
                str(tmp_path / "kc"),
                api.url,
                {},
                {"certificate-authority-data": ca_b64(pki), "proxy-url": url},
            )
            with pytest.raises(ClientError, match="407"):
                await get_pod(kc)
        finally:
            await proxy.stop()

    with_server(tmp_path, api, body)


def test_kubeconfig_merging(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    a = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "one",
        "clusters": [{"name": "c1", "cluster": {"server": "https://one:1"}}],
        "users": [{"name": "u1", "user": {"token": "first"}}],
        "contexts": [
            {"name": "one", "context": {"cluster": "c1", "user": "u1", "namespace": "n1"}}
        ],
    }
    b = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "two",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://shadowed:9"}},
            {"name": "c2", "cluster": {"server": "https://two:2"}},
        ],
        "users": [
            {"name": "u1", "user": {"token": "shadowed"}},
            {"name": "u2", "user": {"tokenFile": "rel/tok"}},
        ],
        "contexts": [{"name": "two", "context": {"cluster": "c2", "user": "u2"}}],
    }
    pa = write(str(tmp_path / "a"), yaml.safe_dump(a))
    (tmp_path / "bdir").mkdir()
    pb = write(str(tmp_path / "bdir" / "b"), yaml.safe_dump(b))
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), pa, pb]))
    cfg = K.load_config(ConfigOverrides())
    assert (cfg.server, cfg.token, cfg.namespace) == ("https://one:1", "first", "n1")
    cfg = K.load_config(ConfigOverrides(context="two"))
    assert cfg.server == "https://two:2" and cfg.namespace == "default"
    assert cfg.token_file == str(tmp_path / "bdir" / "rel" / "tok")
    cfg = K.load_config(ConfigOverrides(context="two", cluster="c1", user="u1", namespace="x"))
    assert (cfg.server, cfg.token, cfg.namespace) == ("https://one:1", "first", "x")
    with pytest.raises(ClientError) as ei:
        K.load_config(ConfigOverrides(context="nope"))
    assert (
        ei.value.line == "Error in configuration: context was not found for specified context: nope"
    )
    with pytest.raises(ClientError, match='auth info "nope" does not exist'):
        K.load_config(ConfigOverrides(user="nope"))
    with pytest.raises(ClientError, match='no server found for cluster "nope"'):
        K.load_config(ConfigOverrides(cluster="nope"))
    bad = write(str(tmp_path / "bad"), "foo: [\n")
    with pytest.raises(ClientError, match=f'error loading config file "{bad}": yaml: line'):
        K.load_config(ConfigOverrides(kubeconfig=bad))


def test_in_cluster(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    write(str(sa / "token"), "sa-token")
    write(str(sa / "namespace"), "kube-system")
    monkeypatch.setattr(K, "SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    cfg = K.load_config(ConfigOverrides())
    assert cfg.in_cluster and cfg.server == "https://10.0.0.1:443"
    assert cfg.token_file == str(sa / "token") and cfg.namespace == "kube-system"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert K.load_config(ConfigOverrides()).server == "http://localhost:8080"


def test_status_errors() -> None:
    e = status_error(
        404, b'{"kind":"Status","reason":"NotFound","message":"pods \\"x\\" not found"}'
    )
    assert e.line == 'Error from server (NotFound): pods "x" not found'
    assert status_error(404, b"nope", "get pods x").line == (
        "Error from server (NotFound): the server could not find the requested resource (get pods x)"
    )
    assert status_error(401, b"").line == (
        "error: You must be logged in to the server (the server has asked for the client to "
        "provide credentials)"
    )
    assert status_error(500, b"boom").line.startswith("Error from server (InternalError): an error")
    assert (
        status_error(418, b'{"kind":"Status","message":"teapot"}').line
        == "Error from server: teapot"
    )


def test_resolve_service_and_wait(tmp_path: Any, pki: Pki) -> None:
    ports = [{"name": "web", "containerPort": 8080}]
    older = pod_json("older", ports=ports, labels={"app": "w"})
    older["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    newer = pod_json("newer", ports=ports, labels={"app": "w"})
    svc = {
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {
            "selector": {"app": "w"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        },
    }
    deploy = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "none"}}},
    }
    api = MiniApi(
        pki=pki,
        routes={
            "/api/v1/namespaces/default/services/s": (200, svc),
            "/apis/apps/v1/namespaces/default/deployments/d": (200, deploy),
            "/api/v1/namespaces/default/pods": (200, {"kind": "PodList", "items": [newer, older]}),
        },
    )

    async def body(api: MiniApi) -> None:
        kc = kubeconfig(
            str(tmp_path / "kc"), api.url, {}, {"certificate-authority-data": ca_b64(pki)}
        )
        client = ApiClient(
            K.load_config(parse_args(["--kubeconfig", kc, "p", "80"]).config_overrides())
        )
        try:
            res = await resolve(client, "default", "svc/s", ["http", "9000:80"], 5)
            assert res.pod_name == "older" and res.ports == ["80:8080", "9000:8080"]
            assert api.seen[-1].target == "/api/v1/namespaces/default/pods?labelSelector=app%3Dw"
            api.routes["/api/v1/namespaces/default/pods"] = (200, {"kind": "PodList", "items": []})
            with pytest.raises(ClientError, match="timed out waiting for the condition"):
                await resolve(client, "default", "deploy/d", ["80"], 1.2)
            with pytest.raises(ClientError) as ei:
                await resolve(client, "default", "nosuch", ["80"], 1)
            assert ei.value.line.startswith("Error from server (NotFound): ")
        finally:
            await client.close()

    with_server(tmp_path, api, body)


def test_kubernetes_timestamps_with_any_fraction_parse_on_every_python() -> None:
    # Python 3.10's fromisoformat rejects 9-digit fractions; pod ordering must not depend on it.
    whole = _ts("2026-11-26T10:00:00Z")
    assert whole is not None
    assert _ts("2026-11-26T10:00:00.5Z") == whole + 0.5
    assert _ts("2026-11-26T10:00:00.123456789Z") == pytest.approx(whole + 0.123456, abs=1e-6)
    assert _ts("not a time") is None and _ts(None) is None


def test_library_entry_stays_a_function_after_its_module_is_imported() -> None:
    import importlib

    import fastpf.client as client

    importlib.import_module("fastpf.client.forward")  # as any `from ...forward import X` does
    assert callable(client.forward) and client.forward.__module__ == "fastpf.client.forward"
