"""HTTP/2 for `fastpf serve` (chosen by ALPN `h2`, or h2c prior knowledge on --no-tls).

kubectl's ordinary API calls offer `h2,http/1.1`, so discovery and GETs arrive here; upgrades
never do (kubectl's upgrade connections send no ALPN, and HTTP/2 cannot upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from fastpf.serve.replies import Forward, Request, Response, Watch, status_response

if TYPE_CHECKING:
    from fastpf.serve.server import HttpProtocol

MAX_BODY = 1 << 20
WATCH_BUFFER_LIMIT = 4 << 20  # unsent watch events one stream may hold before it is reset


@dataclass
class _Stream:
    headers: list[tuple[str, str]]
    method: str = "GET"
    target: str = "/"
    body: int = 0
    data: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)
    end: bool = False  # end the stream once `pending` is sent
    timer: asyncio.TimerHandle | None = None
    detach: Callable[[], None] | None = None


class Http2Handler:
    def __init__(self, proto: HttpProtocol, preface: bytes = b"") -> None:
        self.proto = proto
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.streams: dict[int, _Stream] = {}
        self.handed_over = False
        self._flush()
        if preface:
            self.data_received(preface)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.proto.server.log(f"HTTP/2 protocol error from client: {exc}")
            self._flush()
            self.proto.close()
            return
        for event in events:
            self._on_event(event)
        self._flush()

    def eof_received(self) -> None:
        self.proto.close()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = [(_text(k).lower(), _text(v)) for k, v in event.headers or []]
            stream = _Stream([(k, v) for k, v in headers if not k.startswith(":")])
            pseudo = dict((k, v) for k, v in headers if k.startswith(":"))
            stream.method = pseudo.get(":method", "GET")
            stream.target = pseudo.get(":path", "/")
            if ":authority" in pseudo:
                stream.headers.append(("host", pseudo[":authority"]))
            self.streams[event.stream_id] = stream
            self.proto.request_started()
        elif isinstance(event, h2.events.DataReceived):
            stream_id = event.stream_id
            # Give the window back at once: bodies are tiny or ignored.
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            receiving = self.streams.get(stream_id)
            if receiving is not None:
                receiving.body += len(event.data or b"")
                if receiving.body > MAX_BODY:
                    self._reset(stream_id)
                else:
                    receiving.data += event.data or b""
        elif isinstance(event, h2.events.StreamEnded):
            if event.stream_id in self.streams:
                self._dispatch(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._drop(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                self._pump(event.stream_id)
            else:
                for stream_id in list(self.streams):
                    self._pump(stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.proto.close()

    def _dispatch(self, stream_id: int) -> None:
        stream = self.streams[stream_id]
        request = Request(
            method=stream.method,
            target=stream.target,
            headers=stream.headers,
            body=bytes(stream.data),
        )
        stream.data.clear()
        reply = self.proto.server.api.handle(request)
        if isinstance(reply, Forward):
            reply = status_response(
                400,
                "BadRequest",
                "port-forward needs an HTTP/1.1 connection upgrade; HTTP/2 cannot upgrade",
            )
        if isinstance(reply, Watch):
            self.conn.send_headers(
                stream_id,
                [
                    (":status", "200"),
                    ("content-type", "application/json"),
                    ("cache-control", "no-cache, private"),
                ],
            )
            for line in reply.events:
                stream.pending += line
            loop = asyncio.get_running_loop()
            stream.timer = loop.call_later(reply.timeout, self._end_watch, stream_id)
            if reply.subscription is not None:
                stream.detach = reply.subscription.attach(
                    lambda line: self._watch_event(stream_id, line)
                )
            self._pump(stream_id)
            return
        assert isinstance(reply, Response)
        self.conn.send_headers(
            stream_id,
            [
                (":status", str(reply.status)),
                ("content-type", reply.content_type),
                ("content-length", str(len(reply.body))),
                ("cache-control", "no-cache, private"),
            ],
            end_stream=not reply.body or stream.method.upper() == "HEAD",
        )
        if not reply.body or stream.method.upper() == "HEAD":
            self._drop(stream_id)
            return
        stream.pending += reply.body
        stream.end = True
        self._pump(stream_id)

    def _watch_event(self, stream_id: int, line: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or self.proto.closing:
            return
        if len(stream.pending) > WATCH_BUFFER_LIMIT:
            self._reset(stream_id)  # a watcher that stopped reading
        else:
            stream.pending += line
            self._pump(stream_id)
        self._flush()

    def _end_watch(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or self.proto.closing:
            return
        stream.timer = None
        stream.end = True
        if stream.detach is not None:
            stream.detach()
            stream.detach = None
        self._pump(stream_id)
        self._flush()

    def _pump(self, stream_id: int) -> None:
        """Send what flow control allows; the rest waits for a WINDOW_UPDATE."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        try:
            for _ in range(1 << 16):  # bounded; each pass sends one frame or stops
                if not stream.pending:
                    break
                window = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if window <= 0:
                    return
                chunk = bytes(stream.pending[:window])
                del stream.pending[:window]
                self.conn.send_data(stream_id, chunk)
            if stream.end and not stream.pending:
                self.conn.end_stream(stream_id)
                self._drop(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._drop(stream_id)

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        self._drop(stream_id)

    def _drop(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.timer is not None:
            stream.timer.cancel()
        if stream.detach is not None:
            stream.detach()
            stream.detach = None
        if not self.streams:
            self.proto.touch()  # idle until the next request (keep-alive deadline, budget)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        transport = self.proto.transport
        if data and transport is not None and not self.proto.closing:
            transport.write(data)

    # ---- lifecycle ------------------------------------------------------------------------------
    def idle(self) -> bool:
        return not self.streams

    def shutdown(self) -> None:
        for stream_id in list(self.streams):
            self._drop(stream_id)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.close_connection()
        self._flush()
        self.proto.close()

    def connection_lost(self) -> None:
        for stream_id in list(self.streams):
            self._drop(stream_id)


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
