"""The server role answers an upgrade through the h11 connection that parsed it: one connection
per request, no second one replaying the request just to write the 101."""

from __future__ import annotations

import h11
import pytest

from fastpf.transport import handshake as hs
from fastpf.types import UpgradeRequest

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _kubectl_spdy_head() -> bytes:
    # What the client role sends (kubectl's SPDY upgrade), then the first SPDY bytes.
    _conn, data = hs.spdy_request(
        "127.0.0.1:6443",
        "/api/v1/namespaces/default/pods/p/portforward",
        [("User-Agent", "kubectl/v1.33.0")],
    )
    return data


def test_the_101_is_written_by_the_parsing_connection() -> None:
    request = hs.parse_request(_kubectl_spdy_head() + b"\x80\x03\x00\x01")
    assert request.http is not None and request.trailing == b"\x80\x03\x00\x01"
    result = hs.negotiate(request)
    assert isinstance(result, hs.Accepted) and result.kind == hs.KIND_SPDY
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n"
    )
    assert request.http.our_state is h11.SWITCHED_PROTOCOL  # this very connection answered
    assert request.http.trailing_data == (b"\x80\x03\x00\x01", False)


@pytest.mark.parametrize(
    ("protocol", "kind"),
    [
        (hs.TUNNEL_PROTOCOL, hs.KIND_TUNNEL),
        (hs.CHANNEL_V4, hs.KIND_CHANNEL),
        (hs.CHANNEL_V4_BASE64, hs.KIND_CHANNEL),
    ],
)
def test_websocket_101_through_the_parsing_connection(protocol: str, kind: str) -> None:
    _conn, data, key = hs.websocket_request(
        "h:1", "/api/v1/namespaces/d/pods/p/portforward?ports=80", [protocol], []
    )
    request = hs.parse_request(data)
    result = hs.negotiate(request)
    assert isinstance(result, hs.Accepted) and result.kind == kind
    assert result.response == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + hs.websocket_accept(key).encode() + b"\r\n"
        b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n\r\n"
    )
    assert request.http is not None and request.http.our_state is h11.SWITCHED_PROTOCOL


def test_a_refusal_is_written_by_the_parsing_connection_and_closes_it() -> None:
    head = (
        b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v9.portforward.k8s.io\r\n\r\n"
    )
    request = hs.parse_request(head)
    result = hs.negotiate(request)
    assert isinstance(result, hs.Refused) and result.status == 403
    assert result.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert result.response.endswith(b"server accepts [portforward.k8s.io]\n")
    assert request.http is not None and request.http.our_state is h11.MUST_CLOSE


def test_a_head_request_is_refused_without_a_body() -> None:
    head = (
        b"HEAD /p?ports=80 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    result = hs.negotiate(hs.parse_request(head))
    assert isinstance(result, hs.Refused) and result.status == 400
    assert result.response.endswith(b"Content-Length: 12\r\nConnection: close\r\n\r\n")


def test_a_request_without_its_connection_is_a_clear_error() -> None:
    bare = UpgradeRequest(
        "POST", "/p", {}, [("host", "h"), ("connection", "Upgrade"), ("upgrade", "SPDY/3.1")]
    )
    with pytest.raises(ValueError, match="no h11 connection"):
        hs.negotiate(bare)


@pytest.mark.parametrize(
    "data", [b"", b"GET / HTTP/1.1\r\nHost: h\r\n", b"\x16\x03\x01garbage\r\n\r\n"]
)
def test_parse_request_wants_one_complete_request(data: bytes) -> None:
    with pytest.raises(ValueError):
        hs.parse_request(data)
