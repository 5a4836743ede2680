"""Every exception fastpf raises on purpose, in three families.

- `LocalError`: our caller did something wrong (bad arguments, bad config, a bad object or
  manifest handed to the serve store). Nothing went over a wire.
- `RemoteError`: the peer or the wire. Each carries the wire code it is about as an
  attribute (`wire_code` names it uniformly): the GOAWAY status or WebSocket close code we
  answer a protocol violation with, the RST_STREAM status the peer sent, the HTTP status of a
  refused upgrade or an API error.
- `UnavailableError`: the peer went away or stopped answering. No frame carried a code (a
  closed session, a timeout, no connection in the pool); these are also `ConnectionError` or
  `TimeoutError`, which callers catch.

`ClientError` is orthogonal: a failure the client CLI prints as exactly one line with an exit
code. `UsageError`/`ConfigError` are local ones, `ApiError` a remote one; a plain `ClientError`
is an operational failure (dial, proxy, exec plugin) worded as kubectl words it.

Every exception's `str()` is one readable line, so the CLI can print it without a traceback.
Constructors take the message first and the wire code(s) as keywords with the usual default,
e.g. `SpdySessionError("ping id 0", goaway_status=1)` or `WebSocketError("bad opcode 3")`.
Wire codes are the codec's constants (fastpf._frames); the defaults below are literals because
the codec imports this module (tests check they match).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from fastpf.serve.objects import Resource

__all__ = [
    "AlreadyExists",
    "ApiError",
    "CertError",
    "ChannelClosedError",
    "ClientError",
    "ConfigError",
    "DeadPeerError",
    "FastpfError",
    "HandshakeError",
    "InvalidObject",
    "LimitExceeded",
    "LocalError",
    "ManifestError",
    "NotFound",
    "PatchError",
    "PoolUnavailable",
    "ProtocolError",
    "RemoteError",
    "SelectorError",
    "ServeUsageError",
    "StreamStateError",
    "SessionClosedError",
    "SpdySessionError",
    "StreamResetError",
    "StreamTimeoutError",
    "UnavailableError",
    "UpgradeRedirect",
    "UpgradeRefusedError",
    "UsageError",
    "WebSocketError",
]


class FastpfError(Exception):
    """Base class of every exception fastpf raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or type(self).__name__


# --- the three families ---------------------------------------------------------------------


class LocalError(FastpfError):
    """Our caller misused fastpf: bad arguments, bad configuration, a bad input object."""


class RemoteError(FastpfError):
    """The peer or the wire. `wire_field` names the attribute holding the wire code."""

    wire_field: ClassVar[str] = ""

    @property
    def wire_code(self) -> int | None:
        value = getattr(self, self.wire_field)
        return value if isinstance(value, int) else None


class UnavailableError(FastpfError):
    """The peer went away or stopped answering; no frame carried a code."""


class ClientError(FastpfError):
    """A failure the user sees as exactly `line` on stderr; the process exits with `exit_code`.

    `line` is the complete text (kubectl prefixes most with "error: ", a few not, e.g.
    "Error from server (NotFound): ..."), so each raiser chooses kubectl's exact wording.
    """

    def __init__(self, message: str, *, prefix: str = "error: ", exit_code: int = 1) -> None:
        super().__init__(message)
        self.line = prefix + message
        self.exit_code = exit_code


# --- local misuse ---------------------------------------------------------------------------


class UsageError(ClientError, LocalError):
    """Bad client command line. `show_usage` adds kubectl's "See ... for usage." hint line."""

    def __init__(self, message: str, *, show_usage: bool = False, help_hint: bool = False) -> None:
        super().__init__(message)
        self.show_usage = show_usage
        self.help_hint = help_hint


class ConfigError(ClientError, LocalError):
    """kubeconfig could not be loaded or does not describe a usable server."""


class StreamStateError(LocalError):
    """A local call the stream's state cannot take (a bug in the caller, never the peer)."""


class ServeUsageError(LocalError):
    """Bad `fastpf serve` command line; str() is the one-line message."""


class ManifestError(LocalError, ValueError):
    """A manifest could not be loaded; str() is the one-line message (file and problem)."""


class CertError(LocalError, ValueError):
    """TLS material could not be read or written; str() is one line."""


class SelectorError(LocalError, ValueError):
    """The selector string does not parse; the message is what the API server would say."""


class PatchError(LocalError, ValueError):
    """The patch cannot be applied; str() is the message of a 422 (or 400) reply."""


class InvalidObject(LocalError, ValueError):
    """An object the serve store refuses; str() is one line."""


class LimitExceeded(LocalError, ValueError):
    """A size or count bound of the serve store would be crossed."""


class NotFound(LocalError, LookupError):
    """The serve store has no such object."""

    def __init__(self, resource: Resource, name: str) -> None:
        super().__init__(f'{resource.qualified} "{name}" not found')
        self.resource = resource
        self.name = name


class AlreadyExists(LocalError, ValueError):
    """The serve store already holds an object of that name."""

    def __init__(self, resource: Resource, name: str) -> None:
        super().__init__(f'{resource.qualified} "{name}" already exists')
        self.resource = resource
        self.name = name


# --- remote: the peer broke the protocol (the code is what we answer with) -----------------


class ProtocolError(RemoteError):
    """The peer broke the protocol (framing, compression, state machine)."""


class SpdySessionError(ProtocolError):
    """A connection-level SPDY error: answer with GOAWAY(goaway_status) and close."""

    wire_field = "goaway_status"

    def __init__(self, message: str = "", goaway_status: int = 1) -> None:  # PROTOCOL_ERROR
        super().__init__(message)
        self.goaway_status = goaway_status

    def __reduce__(self) -> tuple[type[SpdySessionError], tuple[str, int]]:
        # Keep the wire code across pickling (multiprocessing, pytest-xdist).
        return (type(self), (self.message, self.goaway_status))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, goaway_status={self.goaway_status})"


class WebSocketError(ProtocolError):
    """A WebSocket protocol error: answer with a close frame carrying close_code."""

    wire_field = "close_code"

    def __init__(self, message: str = "", close_code: int = 1002) -> None:  # protocol error
        super().__init__(message)
        self.close_code = close_code

    def __reduce__(self) -> tuple[type[WebSocketError], tuple[str, int]]:
        return (type(self), (self.message, self.close_code))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, close_code={self.close_code})"


# --- remote: the peer answered with a code --------------------------------------------------


class StreamResetError(RemoteError):
    """The peer reset the stream with RST_STREAM(status) (kubectl: "Stream reset")."""

    wire_field = "status"

    def __init__(self, message: str = "Stream reset", status: int = 5) -> None:  # CANCEL
        super().__init__(message)
        self.status = status


class HandshakeError(RemoteError):
    """The upgrade was refused or its 101 answer was unacceptable.

    `status` is the HTTP status the server answered (None when there was no usable response).
    """

    wire_field = "status"

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[HandshakeError], tuple[str, int | None]]:
        return (type(self), (self.message, self.status))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class UpgradeRefusedError(HandshakeError):
    """The upgrade was refused; `fallback` says whether kubectl would retry with SPDY."""

    def __init__(
        self, message: str = "", status: int | None = None, fallback: bool = False
    ) -> None:
        super().__init__(message, status)
        self.fallback = fallback


class UpgradeRedirect(RemoteError):
    """The SPDY upgrade was answered with a redirect (HTTP `status`) that client-go follows."""

    wire_field = "status"

    def __init__(self, status: int, location: str) -> None:
        super().__init__(location)
        self.status = status
        self.location = location


class ApiError(ClientError, RemoteError):
    """The API server answered with an error: `status` is the HTTP status, `reason` the
    Status object's reason."""

    wire_field = "status"

    def __init__(
        self, message: str, *, status: int, reason: str = "", prefix: str = "error: "
    ) -> None:
        super().__init__(message, prefix=prefix)
        self.status = status
        self.reason = reason


# --- unavailable: the peer went away or is silent -------------------------------------------


class SessionClosedError(UnavailableError, ConnectionError):
    """The SPDY connection ended (GOAWAY, TCP close, protocol error)."""


class ChannelClosedError(UnavailableError, ConnectionError):
    """The WebSocket channel session ended before the port announcements."""


class StreamTimeoutError(UnavailableError, TimeoutError):
    """No SYN_REPLY in time (kubectl: "Timeout occurred")."""

    def __init__(self, message: str = "Timeout occurred") -> None:
        super().__init__(message)


class DeadPeerError(UnavailableError, TimeoutError):
    """No answer to PING (or WebSocket ping) and no sign of progress for the ping timeout."""


class PoolUnavailable(UnavailableError, ConnectionError):
    """No upgraded connection came up within the wait bound (or the forward is ending)."""
