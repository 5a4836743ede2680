"""HTTP/1.1 for `fastpf serve`: h11 on an asyncio protocol, so a port-forward upgrade can hand
the very transport (and the bytes already read behind the request head) to the engine."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import h11

from fastpf.serve import sessions
from fastpf.serve.replies import Forward, Request, Response, Watch, status_response
from fastpf.types import UpgradeRequest

if TYPE_CHECKING:
    from fastpf.serve.server import HttpProtocol

MAX_BODY = 1 << 20  # REST bodies (POST/PUT/PATCH of one object); refuse big ones
WATCH_BUFFER_LIMIT = 4 << 20  # a watcher that does not read this much is cut off
MAX_HEAD = 64 * 1024
_EVENTS_PER_CALL = 256  # bound on pipelined requests handled in one data_received
_REASONS = {413: "RequestEntityTooLarge", 431: "RequestHeaderFieldsTooLarge"}


def _head_size(request: h11.Request) -> int:
    """Bytes of a request head as sent, near enough (h11 strips optional whitespace)."""
    size = len(request.method) + len(request.target) + 13  # " ", " HTTP/1.1\r\n", "\r\n"
    for name, value in request.headers:
        size += len(name) + len(value) + 4  # ": ", "\r\n"
    return size


class Http1Handler:
    def __init__(self, proto: HttpProtocol) -> None:
        self.proto = proto
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._request: h11.Request | None = None
        self._body = 0
        self._body_data = bytearray()
        self._watch_timer: asyncio.TimerHandle | None = None
        self._watch_detach: Callable[[], None] | None = None
        self.busy = False  # a request is being received or a watch is streaming
        self.handed_over = False
        self._held = 0  # bytes received while a watch streams

    # ---- input ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._watch_timer is not None:
            # Nothing is read while a watch streams; a client pipelining more than a few
            # requests meanwhile is not a Kubernetes client: bound the buffer.
            self._held += len(data)
            if self._held > MAX_HEAD:
                self.proto.close()
                return
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.conn.receive_data(b"")
        self._process()

    def _process(self) -> None:
        for _ in range(_EVENTS_PER_CALL):
            if self.handed_over or self._watch_timer is not None or self.proto.closing:
                return
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:  # h11 caps a head still incomplete
                    self._fail(431, "request header fields too large")
                else:
                    self._fail(exc.error_status_hint, f"malformed HTTP request: {exc}")
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                if _head_size(event) > MAX_HEAD:
                    # h11 only caps heads that are still incomplete; one that arrived whole
                    # in a single read is measured here.
                    self._fail(431, "request header fields too large")
                    return
                self._request = event
                self._body = 0
                self._body_data.clear()
                self.busy = True
                self.proto.request_started()
            elif isinstance(event, h11.Data):
                self._body += len(event.data)
                if self._body > MAX_BODY:
                    self._fail(413, "request body too large")
                    return
                self._body_data += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                self.proto.close()
                return
        # More pipelined input than one call should handle: continue on the next loop turn.
        asyncio.get_running_loop().call_soon(self._process)

    # ---- dispatch -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        req = self._request
        assert req is not None
        request = Request(
            method=req.method.decode("ascii", "replace"),
            target=req.target.decode("latin-1"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in req.headers],
            body=bytes(self._body_data),
        )
        self._body_data.clear()
        reply = self.proto.server.api.handle(request)
        if isinstance(reply, Forward):
            self._forward(request, reply)
        elif isinstance(reply, Watch):
            self._start_watch(reply)
        else:
            self._respond(reply, head_only=request.method.upper() == "HEAD")

    def _forward(self, request: Request, reply: Forward) -> None:
        accept = self.proto.server.engine_accept()
        if accept is None:
            self._respond(
                status_response(503, "ServiceUnavailable", "port-forward engine not available")
            )
            return
        trailing, _closed = self.conn.trailing_data
        upgrade = UpgradeRequest(
            method=request.method.upper(),
            path=request.path,
            query=request.query,
            headers=request.headers,
            trailing=bytes(trailing),
            http=self.conn,  # writes the 101 (or the refusal) of the request it parsed
        )
        transport = self.proto.transport
        assert transport is not None
        # From here on the engine owns the transport; this protocol must not touch it again.
        self.handed_over = True
        self.proto.detach()
        try:
            sessions.accept(accept, transport, upgrade, reply.pod, self.proto.server.options)
        except Exception as exc:  # the engine must not raise; if it does, drop only this connection
            self.proto.server.log(
                f"port-forward to {reply.pod.namespace}/{reply.pod.name} failed: {exc!r}"
            )
            transport.abort()

    def _respond(self, response: Response, head_only: bool = False) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-cache, private"),
        ]
        self._send(h11.Response(status_code=response.status, headers=headers))
        if response.body and not head_only:
            self._send(h11.Data(data=response.body))
        self._send(h11.EndOfMessage())
        self._next_cycle()

    def _start_watch(self, watch: Watch) -> None:
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-cache, private")]
        # No Content-Length: h11 uses chunked transfer encoding, as the API server does.
        self._send(h11.Response(status_code=200, headers=headers))
        for event in watch.events:
            self._send(h11.Data(data=event))
        loop = asyncio.get_running_loop()
        self._held = 0
        self._watch_timer = loop.call_later(watch.timeout, self.end_watch)
        if watch.subscription is not None:
            self._watch_detach = watch.subscription.attach(self._watch_event)

    def _watch_event(self, line: bytes) -> None:
        transport = self.proto.transport
        if transport is None or transport.get_write_buffer_size() > WATCH_BUFFER_LIMIT:
            self.proto.close()  # a watcher that stopped reading; the API server drops it too
            return
        self._send(h11.Data(data=line))

    def _stop_watch(self) -> None:
        if self._watch_detach is not None:
            self._watch_detach()
            self._watch_detach = None
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None

    def end_watch(self) -> None:
        if self._watch_timer is None:
            return
        self._stop_watch()
        if self.proto.closing:
            return
        self._send(h11.EndOfMessage())
        self._next_cycle()
        self._process()

    def _next_cycle(self) -> None:
        self.busy = False
        self._request = None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.proto.touch()
        elif self.conn.our_state in (h11.MUST_CLOSE, h11.DONE):
            # HTTP/1.0, "Connection: close", or the client still sending a body we refused.
            self.proto.close()

    def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        transport = self.proto.transport
        if data and transport is not None and not self.proto.closing:
            transport.write(data)

    def _fail(self, status: int, message: str) -> None:
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                response = status_response(status, _REASONS.get(status, "BadRequest"), message)
                self._send(
                    h11.Response(
                        status_code=status,
                        headers=[
                            ("Content-Type", response.content_type),
                            ("Content-Length", str(len(response.body))),
                            ("Connection", "close"),
                        ],
                    )
                )
                self._send(h11.Data(data=response.body))
                self._send(h11.EndOfMessage())
            except h11.LocalProtocolError:
                pass
        self.proto.close()

    # ---- lifecycle ------------------------------------------------------------------------------
    def idle(self) -> bool:
        return not self.busy and self._watch_timer is None

    def shutdown(self) -> None:
        """Server is stopping: end a running watch cleanly, then close."""
        if self._watch_timer is not None:
            self._stop_watch()
            with contextlib.suppress(h11.LocalProtocolError):
                self._send(h11.EndOfMessage())
        self.proto.close()

    def connection_lost(self) -> None:
        self._stop_watch()
