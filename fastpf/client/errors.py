"""Errors the client reports to the user: one line each, with the process exit code."""

from __future__ import annotations

from fastpf.errors import FastpfError


class ClientError(FastpfError):
    """A failure the user sees as exactly `line` on stderr; the process exits with `exit_code`.

    `line` is the complete text (kubectl prefixes most with "error: ", a few not, e.g.
    "Error from server (NotFound): ..."), so each raiser chooses kubectl's exact wording.
    """

    def __init__(self, message: str, *, prefix: str = "error: ", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = prefix + message
        self.exit_code = exit_code


class UsageError(ClientError):
    """Bad command line. `show_usage` adds kubectl's "See ... for usage." hint line."""

    def __init__(self, message: str, *, show_usage: bool = False, help_hint: bool = False) -> None:
        super().__init__(message)
        self.show_usage = show_usage
        self.help_hint = help_hint


class ConfigError(ClientError):
    """kubeconfig could not be loaded or does not describe a usable server."""


class ApiError(ClientError):
    """The API server answered with an error (a Status) or could not be reached.

    `status` is the HTTP status (None when the server was not reached); `reason` the Status reason.
    """

    def __init__(self, message: str, *, status: int | None = None, reason: str = "",
                 prefix: str = "error: ") -> None:
        super().__init__(message, prefix=prefix)
        self.status = status
        self.reason = reason
