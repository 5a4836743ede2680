"""Sans-IO upgrade negotiation (fastpf.transport.handshake), both roles."""

from __future__ import annotations

import json

import h11
import pytest

from fastpf.transport import handshake as hs
from fastpf.types import UpgradeRequest

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def spdy_req(*extra: tuple[str, str], method: str = "POST") -> UpgradeRequest:
    headers = [
        ("host", "127.0.0.1:1"),
        ("content-length", "0"),
        ("connection", "Upgrade"),
        ("upgrade", "SPDY/3.1"),
        *extra,
    ]
    return UpgradeRequest(method, "/api/v1/namespaces/default/pods/x/portforward", {}, headers)


def ws_req(protocols: str | None, query: dict[str, list[str]] | None = None) -> UpgradeRequest:
    headers = [
        ("host", "h"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", KEY),
    ]
    if protocols is not None:
        headers.append(("sec-websocket-protocol", protocols))
    return UpgradeRequest("GET", "/p", query or {}, headers)


def parse(raw: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("host", "x"), ("upgrade", "x"), ("connection", "upgrade")],
        )
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, (h11.Response, h11.InformationalResponse))
    headers: dict[str, list[str]] = {}
    for k, v in event.headers:
        headers.setdefault(k.decode(), []).append(v.decode())
    body = b""
    if isinstance(event, h11.Response):
        for _ in range(10):
            e = conn.next_event()
            if isinstance(e, h11.Data):
                body += e.data
            else:
                break
    return event.status_code, headers, body


def test_accept_key_rfc6455_sample() -> None:
    assert hs.websocket_accept(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_spdy_accepted(method: str) -> None:
    result = hs.negotiate(
        spdy_req(("x-stream-protocol-version", "portforward.k8s.io"), method=method)
    )
    assert isinstance(result, hs.Accepted) and result.kind == hs.KIND_SPDY
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    )


def test_spdy_picks_first_supported_of_list() -> None:
    result = hs.negotiate(
        spdy_req(("x-stream-protocol-version", "v2.portforward.k8s.io, portforward.k8s.io"))
    )
    assert isinstance(result, hs.Accepted)


def test_spdy_no_common_version_403() -> None:
    result = hs.negotiate(
        spdy_req(
            ("x-stream-protocol-version", "v2.portforward.k8s.io"),
            ("x-stream-protocol-version", "v3.portforward.k8s.io"),
        )
    )
    assert isinstance(result, hs.Refused) and result.status == 403
    status, headers, body = parse(result.response)
    assert status == 403
    assert headers["x-accepted-stream-protocol-versions"] == ["portforward.k8s.io"]
    assert body == (
        b"unable to upgrade: unable to negotiate protocol: client supports "
        b"[v2.portforward.k8s.io v3.portforward.k8s.io], server accepts [portforward.k8s.io]\n"
    )
    assert headers["content-type"] == ["text/plain; charset=utf-8"]


def test_spdy_missing_version_400() -> None:
    result = hs.negotiate(spdy_req())
    assert isinstance(result, hs.Refused) and result.status == 400
    assert (
        parse(result.response)[2] == b"unable to upgrade: X-Stream-Protocol-Version is required\n"
    )


def test_spdy_missing_upgrade_headers_400() -> None:
    req = UpgradeRequest(
        "POST", "/p", {}, [("host", "h"), ("x-stream-protocol-version", "portforward.k8s.io")]
    )
    result = hs.negotiate(req)
    assert isinstance(result, hs.Refused) and result.status == 400
    body = parse(result.response)[2].decode()
    assert body.startswith("unable to upgrade: missing upgrade headers in request: http.Header{")
    assert '"X-Stream-Protocol-Version":[]string{"portforward.k8s.io"}' in body


def test_websocket_tunnel() -> None:
    result = hs.negotiate(ws_req("SPDY/3.1+portforward.k8s.io"))
    assert isinstance(result, hs.Accepted) and result.kind == hs.KIND_TUNNEL
    status, headers, _ = parse(result.response)
    assert status == 101
    assert headers["sec-websocket-protocol"] == ["SPDY/3.1+portforward.k8s.io"]
    assert headers["sec-websocket-accept"] == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    assert headers["upgrade"] == ["websocket"]


def test_websocket_tunnel_unknown_version_refused() -> None:
    result = hs.negotiate(ws_req("SPDY/3.1+v9.portforward.k8s.io"))
    assert isinstance(result, hs.Refused) and result.status == 403


@pytest.mark.parametrize(
    ("offered", "chosen", "b64"),
    [
        ("v5.channel.k8s.io,v4.channel.k8s.io", "v4.channel.k8s.io", False),
        ("v4.base64.channel.k8s.io", "v4.base64.channel.k8s.io", True),
        (None, "", False),
    ],
)
def test_channel_protocols(offered: str | None, chosen: str, b64: bool) -> None:
    result = hs.negotiate(ws_req(offered, {"ports": ["80,443", "8080"]}))
    assert isinstance(result, hs.Accepted) and result.kind == hs.KIND_CHANNEL
    assert result.ports == [80, 443, 8080] and result.base64 is b64 and result.subprotocol == chosen
    headers = parse(result.response)[1]
    assert headers.get("sec-websocket-protocol", [""]) == [chosen]


def test_channel_kubelet_port_param() -> None:
    result = hs.negotiate(ws_req("v4.channel.k8s.io", {"port": ["5000"]}))
    assert isinstance(result, hs.Accepted) and result.ports == [5000]


def test_channel_unsupported_protocol_403() -> None:
    result = hs.negotiate(ws_req("v5.channel.k8s.io", {"ports": ["80"]}))
    assert isinstance(result, hs.Refused) and result.status == 403


def test_channel_port_errors() -> None:
    r = hs.negotiate(ws_req("v4.channel.k8s.io"))
    assert isinstance(r, hs.Refused) and r.status == 400
    assert parse(r.response)[2] == b'query parameter "port" is required\n'
    r = hs.negotiate(ws_req("v4.channel.k8s.io", {"port": ["0"]}))
    assert isinstance(r, hs.Refused) and parse(r.response)[2] == b'port "0" must be > 0\n'
    r = hs.negotiate(ws_req("v4.channel.k8s.io", {"ports": ["8x"]}))
    assert isinstance(r, hs.Refused) and r.status == 400
    status = json.loads(parse(r.response)[2])
    assert status["kind"] == "Status" and status["code"] == 400
    assert status["message"].startswith('unable to parse "8x" as a port')


def test_bad_websocket_key_400() -> None:
    req = UpgradeRequest(
        "GET",
        "/p",
        {"ports": ["1"]},
        [
            ("host", "h"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
        ],
    )
    r = hs.negotiate(req)
    assert isinstance(r, hs.Refused) and r.status == 400


def _resp(status: int, headers: list[tuple[str, str]]) -> h11.Response | h11.InformationalResponse:
    if status == 101:
        return h11.InformationalResponse(status_code=101, headers=headers)
    return h11.Response(status_code=status, headers=headers)


def test_client_checks_like_kubectl() -> None:
    ok = _resp(
        101,
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "portforward.k8s.io"),
        ],
    )
    assert hs.check_spdy_response(ok).ok
    no_version = _resp(101, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")])
    assert hs.check_spdy_response(no_version).message == (
        'unable to negotiate protocol: client supports "portforward.k8s.io", server returned ""'
    )
    status = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": 'pods "x" is forbidden: nope',
            "code": 403,
        }
    ).encode()
    r = hs.check_spdy_response(_resp(403, [("Content-Type", "application/json")]), status)
    assert r.message == 'error upgrading connection: pods "x" is forbidden: nope'
    r = hs.check_spdy_response(_resp(400, []), b"  some text\n")
    assert r.message == "error upgrading connection: unable to upgrade connection: some text"


def test_client_websocket_checks() -> None:
    key = KEY
    good = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Accept", hs.websocket_accept(key)),
    ]
    offered = [hs.TUNNEL_PROTOCOL]
    r = hs.check_websocket_response(
        _resp(101, [*good, ("Sec-WebSocket-Protocol", hs.TUNNEL_PROTOCOL)]), key, offered
    )
    assert r.ok
    r = hs.check_websocket_response(_resp(101, good), key, offered)
    assert not r.ok and r.fallback
    r = hs.check_websocket_response(_resp(404, []), key, offered, b"not found")
    assert not r.ok and r.fallback and r.status == 404


def test_client_requests_match_kubectl() -> None:
    _, raw = hs.spdy_request(
        "127.0.0.1:6443",
        "/api/v1/namespaces/default/pods/x/portforward",
        [("User-Agent", "kubectl/v1.33.1")],
    )
    assert raw.startswith(
        b"POST /api/v1/namespaces/default/pods/x/portforward HTTP/1.1\r\nHost: 127.0.0.1:6443\r\n"
    )
    for line in (
        b"Content-Length: 0",
        b"Connection: Upgrade",
        b"Upgrade: SPDY/3.1",
        b"X-Stream-Protocol-Version: portforward.k8s.io",
    ):
        assert line + b"\r\n" in raw
    _, raw, key = hs.websocket_request("h", "/p", [hs.TUNNEL_PROTOCOL], [])
    assert raw.startswith(b"GET /p HTTP/1.1\r\n")
    assert b"Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n" in raw
    assert f"Sec-WebSocket-Key: {key}\r\n".encode() in raw
    assert b"Sec-WebSocket-Version: 13\r\n" in raw and b"Upgrade: websocket\r\n" in raw
