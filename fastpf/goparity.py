"""Values read and written the way Go (and so kubectl and the API server) reads and writes them.

kubectl users script against exact texts: a flag's parse error, a duration in a message, a
quoted byte string, a timestamp. Each helper names the Go function it matches; the error texts
are Go's. The client and `fastpf serve` take these from here and nowhere else.
"""

from __future__ import annotations

import datetime as _dt
import re
import time

__all__ = [
    "atoi",
    "errno_text",
    "format_duration",
    "format_rfc3339",
    "format_rfc3339_micro",
    "human_duration",
    "parse_bool",
    "parse_duration",
    "parse_int",
    "parse_rfc3339",
    "parse_uint16",
    "quote",
]

# --- time.Duration --------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_NUMBER_ONLY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)$")
_NUMBER_AND_UNIT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([^\d.]+)")


def parse_duration(text: str) -> float:
    """time.ParseDuration, in seconds ("1m30s" -> 90.0). ValueError with Go's message."""
    orig = text
    if text in ("0", "+0", "-0"):
        return 0.0
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            if _NUMBER_ONLY.match(text[pos:]):
                raise ValueError(f'time: missing unit in duration "{orig}"')
            um = _NUMBER_AND_UNIT.match(text[pos:])
            if um:
                raise ValueError(f'time: unknown unit "{um.group(2)}" in duration "{orig}"')
            raise ValueError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """time.Duration.String() for the bounds and delays we print (1m0s, 1.5s, 400ms, 0s),
    rounded to milliseconds (microseconds below one millisecond); negative prints 0s."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.0f}ms" if ms >= 1 else f"{seconds * 1e6:.0f}\u00b5s"
    minutes, secs = divmod(seconds, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if minutes:
        hours, minutes = divmod(int(minutes), 60)
        text = (f"{hours}h" if hours else "") + f"{minutes}m" + text
    return text


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as kubectl shows AGE."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


# --- strconv --------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?\d+")
_UNSIGNED = re.compile(r"\d+")


def parse_bool(text: str) -> bool:
    """strconv.ParseBool. ValueError with Go's message."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def parse_int(text: str, bit_size: int = 64) -> int:
    """strconv.ParseInt(text, 10, bit_size). ValueError with Go's message."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    value = int(text)
    if not -(1 << (bit_size - 1)) <= value < 1 << (bit_size - 1):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return value


def parse_uint16(text: str) -> int:
    """strconv.ParseUint(text, 10, 16). ValueError with Go's message."""
    if not _UNSIGNED.fullmatch(text):
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > 0xFFFF:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def atoi(text: str) -> int | None:
    """strconv.Atoi's syntax: optional sign and decimal digits; None when it is not a number
    (kubectl then takes it as a port name). The range is the caller's check."""
    if _DECIMAL.fullmatch(text):
        return int(text)
    return None


_GO_ESCAPES = {
    7: "\\a",
    8: "\\b",
    12: "\\f",
    10: "\\n",
    13: "\\r",
    9: "\\t",
    11: "\\v",
    0x22: '\\"',
    0x5C: "\\\\",
}


def quote(data: bytes, limit: int = 512) -> str:
    """Go's %q of `data` (strconv.Quote: printable UTF-8 kept, invalid bytes as \\xNN), cut to
    `limit` bytes with "..." after the closing quote when longer: one readable line."""
    cut = data[:limit]
    out = []
    for ch in cut.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an invalid byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code in _GO_ESCAPES:
            out.append(_GO_ESCAPES[code])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"' + ("..." if len(data) > limit else "")


# --- syscall errors -------------------------------------------------------------------------


def errno_text(exc: OSError) -> str:
    """syscall.Errno.Error(): the C library's text in lower case ("connection refused")."""
    return (exc.strerror or str(exc)).lower()


# --- RFC 3339 (metav1.Time) -----------------------------------------------------------------


def parse_rfc3339(text: str) -> float:
    """RFC 3339 time (Kubernetes' format, any fraction length) as a POSIX timestamp.
    ValueError when it is not one."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python < 3.11 cannot parse fractional seconds of arbitrary length; trim to micros.
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        text = head + "." + (frac[:6].ljust(6, "0")) + rest[i:]
    value = _dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


def format_rfc3339(at: float | None = None) -> str:
    """metav1.Time as the API server writes it: UTC, whole seconds ("2024-05-01T12:00:00Z")."""
    when = time.time() if at is None else at
    return _dt.datetime.fromtimestamp(when, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_rfc3339_micro(at: float | None = None) -> str:
    """metav1.MicroTime: UTC with six fraction digits ("2024-05-01T12:00:00.000001Z")."""
    when = time.time() if at is None else at
    return _dt.datetime.fromtimestamp(when, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
