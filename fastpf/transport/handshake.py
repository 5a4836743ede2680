"""Sans-IO upgrade negotiation for port-forward (PROTOCOL.md 3 and 6.1), both roles.

Server: `negotiate(request)` decides between SPDY/3.1, the WebSocket SPDY tunnel and the
WebSocket channel protocols and returns the complete bytes to write (101 head, or a refusal
with kubelet's / the apiserver's text), written by the h11 connection that parsed the request
(`UpgradeRequest.http`; `parse_request` makes one). Client: `spdy_request` /
`websocket_request` build the request heads kubectl sends, `check_response` judges the answer
like kubectl does. Heads are serialised by h11 in both roles; nothing here touches a socket.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

import h11

from fastpf.goparity import quote
from fastpf.types import UpgradeRequest

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
SERVER_PROTOCOLS = (PORTFORWARD_PROTOCOL,)  # only version in released code (PROTOCOL.md 3.1)
SPDY_UPGRADE = "SPDY/3.1"
TUNNEL_PREFIX = "SPDY/3.1+"
TUNNEL_PROTOCOL = TUNNEL_PREFIX + PORTFORWARD_PROTOCOL
CHANNEL_V4 = "v4.channel.k8s.io"
CHANNEL_V4_BASE64 = "v4.base64.channel.k8s.io"

# Kinds of negotiated sessions.
KIND_SPDY = "spdy"  # raw SPDY after the 101
KIND_TUNNEL = "websocket"  # SPDY byte stream inside WebSocket binary messages
KIND_CHANNEL = "ws-channel"  # v4 channel protocol


def websocket_accept(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key.strip() + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_websocket_key() -> str:
    return base64.b64encode(os.urandom(16)).decode("ascii")


@dataclass
class Accepted:
    """Negotiation succeeded: write `response` (the 101 head), then speak `kind`."""

    kind: str  # KIND_SPDY / KIND_TUNNEL / KIND_CHANNEL
    response: bytes
    subprotocol: str | None = None  # WebSocket subprotocol chosen ("" = none)
    base64: bool = False  # channel protocol: v4.base64.channel.k8s.io
    ports: list[int] = field(default_factory=list)  # channel protocol: ports in query order


@dataclass
class Refused:
    """Negotiation failed: write `response` (complete, with body) and close."""

    status: int
    response: bytes
    reason: str  # the text, for logs


# ---------------------------------------------------------------------------------------------
# HTTP heads via h11 (server side): the answer goes through the connection that parsed the request


def parse_request(data: bytes) -> UpgradeRequest:
    """Server role for callers without an HTTP server of their own (tests, embedders): parse
    one complete request in `data` with an h11 server connection. The result carries that
    connection, which writes the answer; bytes after the request are its `trailing`.
    ValueError when `data` does not hold one complete request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    head: h11.Request | None = None
    for _ in range(len(data) + 2):  # bounded: every event consumes input or ends the loop
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ValueError(f"malformed HTTP request: {exc}") from None
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            break
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            raise ValueError("incomplete HTTP request")
    if head is None:
        raise ValueError("no HTTP request")
    path, _, query = head.target.decode("latin-1").partition("?")
    return UpgradeRequest(
        method=head.method.decode("ascii"),
        path=path,
        query=parse_qs(query, keep_blank_values=True),
        headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in head.headers],
        trailing=bytes(conn.trailing_data[0]),
        http=conn,
    )


def _answering(request: UpgradeRequest) -> h11.Connection:
    if request.http is None:
        raise ValueError("the request carries no h11 connection to answer on (see parse_request)")
    return request.http


def _switching(request: UpgradeRequest, headers: list[tuple[str, str]]) -> bytes:
    """The 101 head, written by the h11 connection that parsed the request (which then has
    switched protocols: h11 is done with it)."""
    event = h11.InformationalResponse(
        status_code=101, headers=headers, reason=b"Switching Protocols"
    )
    return _answering(request).send(event) or b""


def error_response(
    request: UpgradeRequest,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra_headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """A complete HTTP/1.1 error response (head + body) with Connection: close, written by the
    h11 connection that parsed the request."""
    headers = [("Content-Type", content_type)]
    if content_type.startswith("text/plain"):
        headers.append(("X-Content-Type-Options", "nosniff"))
    headers.extend(extra_headers or [])
    headers.append(("Content-Length", str(len(body))))
    headers.append(("Connection", "close"))
    conn = _answering(request)
    out = (
        conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))) or b""
    )
    if request.method.upper() != "HEAD":  # a HEAD answer has no body (h11 enforces it)
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 500: "InternalError"}


def status_json(code: int, message: str, reason: str | None = None) -> bytes:
    """A Kubernetes `Status` object (what the apiserver sends for its own refusals)."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "code": code,
    }
    return json.dumps(status).encode()


def _text_refusal(
    request: UpgradeRequest, status: int, text: str, extra: list[tuple[str, str]] | None = None
) -> Refused:
    # Go's http.Error: text/plain, nosniff, body + "\n".
    return Refused(
        status, error_response(request, status, (text + "\n").encode(), extra_headers=extra), text
    )


def _status_refusal(request: UpgradeRequest, status: int, message: str) -> Refused:
    body = status_json(status, message)
    return Refused(status, error_response(request, status, body, "application/json"), message)


def _go_header_repr(request: UpgradeRequest) -> str:
    """Approximation of Go's %#v of http.Header (kubelet's missing-upgrade-headers text)."""
    merged: dict[str, list[str]] = {}
    for name, value in request.headers:
        canon = "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))
        merged.setdefault(canon, []).append(value)
    items = ", ".join(
        f'"{k}":[]string{{{", ".join(json.dumps(v) for v in vs)}}}'
        for k, vs in sorted(merged.items())
    )
    return "http.Header{" + items + "}"


def _go_list(values: list[str] | tuple[str, ...]) -> str:
    return "[" + " ".join(values) + "]"


def _parse_ports(request: UpgradeRequest) -> tuple[list[int] | None, Refused | None]:
    """Ports from `?ports=` (apiserver) or `?port=` (kubelet); repeated and/or comma lists."""
    key = "ports" if request.query.get("ports") else "port"
    raw = request.query.get(key) or []
    if not raw:
        return None, _text_refusal(request, 400, 'query parameter "port" is required')
    ports: list[int] = []
    for value in raw:
        if not value:
            return None, _text_refusal(request, 400, 'query parameter "port" cannot be empty')
        for part in value.split(","):
            part = part.strip()
            try:
                port = int(part, 10)
                if not part.isdigit() or port > 65535:
                    raise ValueError
            except ValueError:
                text = f'unable to parse "{value}" as a port: strconv.ParseUint: parsing "{part}": invalid syntax'
                if key == "ports":  # the apiserver validates its own query parameter
                    return None, _status_refusal(request, 400, text)
                return None, _text_refusal(request, 400, text)
            if port < 1:
                return None, _text_refusal(request, 400, f'port "{value}" must be > 0')
            ports.append(port)
    return ports, None


def is_websocket(request: UpgradeRequest) -> bool:
    return any(v.lower() == "websocket" for v in request.header_values("upgrade"))


def negotiate(request: UpgradeRequest) -> Accepted | Refused:
    """Server-side negotiation of a port-forward upgrade (SPDY, WS tunnel, WS channel)."""
    if is_websocket(request):
        return _negotiate_websocket(request)
    return _negotiate_spdy(request)


def _negotiate_spdy(request: UpgradeRequest) -> Accepted | Refused:
    connection = [v.lower() for v in request.header_values("connection")]
    upgrade = [v.lower() for v in request.header_values("upgrade")]
    if "upgrade" not in connection or not any(SPDY_UPGRADE.lower() in u for u in upgrade):
        return _text_refusal(
            request,
            400,
            "unable to upgrade: missing upgrade headers in request: " + _go_header_repr(request),
        )
    client_versions = request.header_values("x-stream-protocol-version")
    if not client_versions:
        return _text_refusal(
            request, 400, "unable to upgrade: X-Stream-Protocol-Version is required"
        )
    chosen = next((v for v in client_versions if v in SERVER_PROTOCOLS), None)
    if chosen is None:
        text = (
            "unable to upgrade: unable to negotiate protocol: client supports "
            f"{_go_list(client_versions)}, server accepts {_go_list(SERVER_PROTOCOLS)}"
        )
        # One header per supported version, as kubelet's w.Header().Add() loop does.
        extra = [("X-Accepted-Stream-Protocol-Versions", v) for v in SERVER_PROTOCOLS]
        return _text_refusal(request, 403, text, extra)
    head = _switching(
        request,
        [
            ("Connection", "Upgrade"),
            ("Upgrade", SPDY_UPGRADE),
            ("X-Stream-Protocol-Version", chosen),
        ],
    )
    return Accepted(KIND_SPDY, head)


def _ws_key_ok(key: str | None) -> bool:
    if not key:
        return False
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _negotiate_websocket(request: UpgradeRequest) -> Accepted | Refused:
    key = request.header("sec-websocket-key")
    if request.header("sec-websocket-version") != "13" or not _ws_key_ok(key):
        return _text_refusal(request, 400, "Bad Request")
    assert key is not None
    offered = request.header_values("sec-websocket-protocol")
    base_headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", websocket_accept(key)),
    ]
    tunnels = [p for p in offered if p.startswith(TUNNEL_PREFIX) and p.endswith(".k8s.io")]
    if tunnels:
        # The apiserver's tunnelling handler: strip the prefix, negotiate like SPDY upstream.
        chosen = next((p for p in tunnels if p[len(TUNNEL_PREFIX) :] in SERVER_PROTOCOLS), None)
        if chosen is None:
            client = [p[len(TUNNEL_PREFIX) :] for p in tunnels]
            text = (
                "unable to upgrade: unable to negotiate protocol: client supports "
                f"{_go_list(client)}, server accepts {_go_list(SERVER_PROTOCOLS)}"
            )
            extra = [("X-Accepted-Stream-Protocol-Versions", v) for v in SERVER_PROTOCOLS]
            return _text_refusal(request, 403, text, extra)
        head = _switching(request, base_headers + [("Sec-WebSocket-Protocol", chosen)])
        return Accepted(KIND_TUNNEL, head, subprotocol=chosen)
    # Channel protocol (kubelet wsstream): first client-offered protocol we support; none
    # offered means the binary protocol without a subprotocol header.
    supported = {CHANNEL_V4: False, CHANNEL_V4_BASE64: True}
    if offered:
        chosen_ch = next((p for p in offered if p in supported), None)
        if chosen_ch is None:
            # x/net/websocket answers a failed Handshake with a bare 403.
            return Refused(
                403, error_response(request, 403, b""), "requested protocol(s) are not supported"
            )
    else:
        chosen_ch = ""
    ports, refusal = _parse_ports(request)
    if refusal is not None:
        return refusal
    assert ports is not None
    headers = list(base_headers)
    if chosen_ch:
        headers.append(("Sec-WebSocket-Protocol", chosen_ch))
    head = _switching(request, headers)
    return Accepted(
        KIND_CHANNEL,
        head,
        subprotocol=chosen_ch,
        base64=supported.get(chosen_ch, False),
        ports=ports,
    )


# ---------------------------------------------------------------------------------------------
# Client side


def _client_request(
    host: str, path: str, method: str, headers: list[tuple[str, str]]
) -> tuple[h11.Connection, bytes]:
    conn = h11.Connection(h11.CLIENT)
    data = (
        conn.send(h11.Request(method=method, target=path, headers=[("Host", host), *headers]))
        or b""
    )
    data += conn.send(h11.EndOfMessage()) or b""
    return conn, data


def spdy_request(
    host: str, path: str, extra_headers: list[tuple[str, str]], method: str = "POST"
) -> tuple[h11.Connection, bytes]:
    """kubectl's SPDY upgrade (PROTOCOL.md 3.1): POST, Content-Length: 0. `method` "GET" is
    the request after a 301/302/303 redirect (Go's client drops the body then)."""
    headers = [
        *extra_headers,
        *([("Content-Length", "0")] if method == "POST" else []),
        ("Connection", "Upgrade"),
        ("Upgrade", SPDY_UPGRADE),
        ("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOL),
    ]
    return _client_request(host, path, method, headers)


def websocket_request(
    host: str,
    path: str,
    subprotocols: list[str],
    extra_headers: list[tuple[str, str]],
    key: str | None = None,
) -> tuple[h11.Connection, bytes, str]:
    """A WebSocket upgrade GET offering `subprotocols`; returns (conn, bytes, key)."""
    if key is None:
        return _websocket_request_cached(host, path, subprotocols, extra_headers)
    conn, data = _client_request(host, path, "GET", _ws_headers(subprotocols, extra_headers, key))
    return conn, data, key


def _ws_headers(
    subprotocols: list[str], extra_headers: list[tuple[str, str]], key: str
) -> list[tuple[str, str]]:
    headers = [*extra_headers, ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key)]
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ",".join(subprotocols)))
    headers += [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")]
    return headers


# Stand-in for the per-connection Sec-WebSocket-Key in a cached request event.
_KEY_SLOT = "{sec-websocket-key-slot}"
_KEY_SLOT_BYTES = _KEY_SLOT.encode("ascii")
_EOM = h11.EndOfMessage()
_ws_request_cache: dict[tuple[object, ...], h11.Request] = {}


def _websocket_request_cached(
    host: str, path: str, subprotocols: list[str], extra_headers: list[tuple[str, str]]
) -> tuple[h11.Connection, bytes, str]:
    """websocket_request with a fresh key. ws-channel sends this request once per local
    connection, and h11 spends most of its time validating the headers when the Request event
    is built: the event is built once per request shape (with a stand-in key) and reused, and
    the key is put into h11's output."""
    key = new_websocket_key()
    shape = (host, path, tuple(subprotocols), tuple(extra_headers))
    event = _ws_request_cache.get(shape)
    if event is None:
        event = h11.Request(
            method="GET",
            target=path,
            headers=[("Host", host), *_ws_headers(subprotocols, extra_headers, _KEY_SLOT)],
        )
        if len(_ws_request_cache) >= 32:  # credentials rotate; never grow without bound
            _ws_request_cache.clear()
        _ws_request_cache[shape] = event
    conn = h11.Connection(h11.CLIENT)
    data = (conn.send(event) or b"") + (conn.send(_EOM) or b"")
    if data.count(_KEY_SLOT_BYTES) != 1:  # the stand-in also in the path or a header value
        conn, data = _client_request(
            host, path, "GET", _ws_headers(subprotocols, extra_headers, key)
        )
        return conn, data, key
    return conn, data.replace(_KEY_SLOT_BYTES, key.encode("ascii")), key


@dataclass
class ResponseCheck:
    """The client's verdict on the upgrade answer."""

    ok: bool
    status: int
    message: str = ""  # kubectl's error text when not ok
    subprotocol: str | None = None
    fallback: bool = False  # "auto" should retry with SPDY


def _headers_of(event: h11.InformationalResponse | h11.Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        out[key] = out[key] + ", " + val if key in out else val
    return out


def body_error_text(body: bytes) -> str:
    """kubectl's text for a refused upgrade body: a Status' message, or
    `unable to upgrade connection: <trimmed body>`."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        obj = None
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        return str(obj.get("message", ""))
    return "unable to upgrade connection: " + body.decode("utf-8", "replace").strip()


def check_spdy_response(
    event: h11.InformationalResponse | h11.Response, body: bytes = b""
) -> ResponseCheck:
    """kubectl's check of a SPDY upgrade answer (spdy roundtripper NewConnection + portforward)."""
    headers = _headers_of(event)
    if (
        event.status_code != 101
        or "upgrade" not in headers.get("connection", "").lower()
        or SPDY_UPGRADE.lower() not in headers.get("upgrade", "").lower()
    ):
        return ResponseCheck(
            False, event.status_code, "error upgrading connection: " + body_error_text(body)
        )
    version = headers.get("x-stream-protocol-version", "")
    if version != PORTFORWARD_PROTOCOL:
        return ResponseCheck(
            False,
            event.status_code,
            f'unable to negotiate protocol: client supports "{PORTFORWARD_PROTOCOL}", server returned "{version}"',
        )
    return ResponseCheck(True, 101)


def check_websocket_response(
    event: h11.InformationalResponse | h11.Response, key: str, offered: list[str], body: bytes = b""
) -> ResponseCheck:
    """Check a WebSocket upgrade answer; `fallback` tells "auto" to retry with SPDY."""
    headers = _headers_of(event)
    if event.status_code != 101:
        return ResponseCheck(
            False,
            event.status_code,
            "error upgrading connection: " + body_error_text(body),
            fallback=True,
        )
    if (
        "upgrade" not in headers.get("connection", "").lower()
        or headers.get("upgrade", "").lower() != "websocket"
        or headers.get("sec-websocket-accept", "") != websocket_accept(key)
    ):
        return ResponseCheck(
            False, 101, "error upgrading connection: websocket: bad handshake", fallback=True
        )
    proto = headers.get("sec-websocket-protocol", "")
    if offered and proto not in offered:
        return ResponseCheck(
            False,
            101,
            f"invalid protocol, expected one of {_go_list(offered)}, got {json.dumps(proto)}",
            subprotocol=proto,
            fallback=True,
        )
    return ResponseCheck(True, 101, subprotocol=proto)


# ---------------------------------------------------------------------------------------------
# Client side: what kubectl says about an answer that is not HTTP (Go's net/http wording)

REDIRECTS = (301, 302, 303, 307, 308)


def status_line_error(received: bytes) -> str | None:
    """Go's verdict (net/http.ReadResponse) on the status line at the start of `received`:
    its error text, or None when the line is valid or may still become valid (incomplete,
    and a prefix of "HTTP/"). A line that cannot start an HTTP answer is judged at once,
    as far as it arrived (kubectl would wait for its end, possibly forever)."""
    end = received.find(b"\n")
    line = received if end < 0 else received[:end]
    if end < 0 and b"HTTP/".startswith(line[:5]):
        return None
    if line.endswith(b"\r"):
        line = line[:-1]
    proto, space, status = line.partition(b" ")
    if not space:
        return f"malformed HTTP response {quote(line)}"
    code = status.lstrip(b" ").partition(b" ")[0]
    if len(code) != 3 or not code.isdigit():
        return f"malformed HTTP status code {quote(code)}"
    if not _go_http_version(proto):
        return f"malformed HTTP version {quote(proto)}"
    return None


def _go_http_version(proto: bytes) -> bool:
    if proto in (b"HTTP/1.1", b"HTTP/1.0"):
        return True
    return (
        len(proto) == 8
        and proto.startswith(b"HTTP/")
        and proto[6:7] == b"."
        and proto[5:6].isdigit()
        and proto[7:8].isdigit()
    )


def header_error(received: bytes, too_long: bool) -> str:
    """Go's text for a bad header block after a valid status line (h11 found it bad)."""
    if too_long:
        return f"net/http: server response headers exceeded {len(received)} bytes; aborted"
    for line in received.split(b"\n")[1:]:
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            return f"malformed MIME header initial line: {quote(line)[1:-1]}"
        name, colon, _value = line.partition(b":")
        if not colon or not name or any(c <= 32 or c >= 127 for c in name):
            return f"malformed MIME header line: {quote(line)[1:-1]}"
    return "malformed HTTP response headers"
