"""fastpf.goparity: Go's parsers and formatters, with Go's results and error texts."""

from __future__ import annotations

import errno
import os

import pytest

from fastpf import goparity as G
from fastpf.client.args import parse_args
from fastpf.errors import UsageError

# --- time.ParseDuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m30s", 90.0),
        ("1m0s", 60.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("1h2m3.5s", 3723.5),
        ("-1.5h", -5400.0),
        ("+5s", 5.0),
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2ns", 2e-9),
        ("3us", 3e-6),
        ("3\u00b5s", 3e-6),
        ("3\u03bcs", 3e-6),
        ("1h1m1s1ms", 3661.001),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert G.parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("abc", 'time: invalid duration "abc"'),
        ("5", 'time: missing unit in duration "5"'),
        ("1h1", 'time: missing unit in duration "1h1"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
    ],
)
def test_parse_duration_errors_are_gos(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        G.parse_duration(text)
    assert str(info.value) == message


def test_format_duration() -> None:
    values = (0, -3, 0.0004, 0.25, 1, 1.5, 60, 90, 3600, 3723.5)
    assert [G.format_duration(x) for x in values] == [
        "0s",
        "0s",
        "400\u00b5s",
        "250ms",
        "1s",
        "1.5s",
        "1m0s",
        "1m30s",
        "1h0m0s",
        "1h2m3.5s",
    ]
    for text in ("1.5s", "1m30s", "2h0m5s", "250ms"):
        assert G.format_duration(G.parse_duration(text)) == text  # round trip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (49 * 3600, "2d1h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_reads_like_kubectl_age(seconds: int, text: str) -> None:
    assert G.human_duration(seconds) == text


# --- strconv -----------------------------------------------------------------------------------


def test_parse_bool() -> None:
    for text in ("1", "t", "T", "true", "TRUE", "True"):
        assert G.parse_bool(text) is True
    for text in ("0", "f", "F", "false", "FALSE", "False"):
        assert G.parse_bool(text) is False
    for bad in ("yes", "tRUE", "", " true"):
        with pytest.raises(ValueError) as info:
            G.parse_bool(bad)
        assert str(info.value) == f'strconv.ParseBool: parsing "{bad}": invalid syntax'


def test_parse_int_syntax_and_range() -> None:
    assert G.parse_int("+7") == 7 and G.parse_int("-0") == 0 and G.parse_int("0012") == 12
    assert G.parse_int("2147483647", 32) == 2**31 - 1
    assert G.parse_int("-2147483648", 32) == -(2**31)
    assert G.parse_int("2147483648") == 2**31  # 64-bit by default
    for bad in ("", "1.5", "0x10", " 1", "1_000", "--1"):
        with pytest.raises(ValueError) as info:
            G.parse_int(bad)
        assert str(info.value) == f'strconv.ParseInt: parsing "{bad}": invalid syntax'
    for big, bits in (("2147483648", 32), ("-2147483649", 32), ("9223372036854775808", 64)):
        with pytest.raises(ValueError) as info:
            G.parse_int(big, bits)
        assert str(info.value) == f'strconv.ParseInt: parsing "{big}": value out of range'


def test_klog_level_is_an_int32() -> None:
    # kubectl's -v is klog's Level: strconv.ParseInt(value, 10, 32) behind pflag's wording.
    assert parse_args(["-v", "2147483647", "p", "80"]).verbosity == 2**31 - 1
    with pytest.raises(UsageError) as info:
        parse_args(["-v", "2147483648", "p", "80"])
    assert info.value.line == (
        'error: invalid argument "2147483648" for "-v, --v" flag: '
        'strconv.ParseInt: parsing "2147483648": value out of range'
    )


def test_parse_uint16() -> None:
    assert G.parse_uint16("0") == 0 and G.parse_uint16("65535") == 65535
    with pytest.raises(
        ValueError, match=r'^strconv.ParseUint: parsing "65536": value out of range$'
    ):
        G.parse_uint16("65536")
    for bad in ("+1", "-1", "", "8o"):
        with pytest.raises(ValueError) as info:
            G.parse_uint16(bad)
        assert str(info.value) == f'strconv.ParseUint: parsing "{bad}": invalid syntax'


def test_atoi_tells_numbers_from_names() -> None:
    assert [G.atoi(t) for t in ("80", "+5", "-3", "http", "5a", "", "8 0")] == [
        80,
        5,
        -3,
        None,
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("data", "quoted"),
    [
        (b"abc", '"abc"'),
        (b'a"b\\', '"a\\"b\\\\"'),
        (b"\x00\x7f\x1b", '"\\x00\\x7f\\x1b"'),
        (b"\n\t\r\x07\x08\x0c\x0b", '"\\n\\t\\r\\a\\b\\f\\v"'),
        (b"\xff\xfe", '"\\xff\\xfe"'),
        ("\u00e9t\u00e9".encode(), '"\u00e9t\u00e9"'),
        ("\u200b\u00a0".encode(), '"\\u200b\\u00a0"'),
        ("\U0001f600".encode(), '"\U0001f600"'),
        ("\U000e0001".encode(), '"\\U000e0001"'),
    ],
)
def test_quote_is_strconv_quote(data: bytes, quoted: str) -> None:
    assert G.quote(data) == quoted


def test_quote_cuts_long_input_to_one_line() -> None:
    assert G.quote(b"abcdef", limit=3) == '"abc"...'
    assert G.quote(b"abc", limit=3) == '"abc"'
    assert "\n" not in G.quote(b"\n" * 2000)


def test_errno_text_is_go_syscall_wording() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    assert G.errno_text(refused) == "connection refused"
    in_use = OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    assert G.errno_text(in_use) == "address already in use"
    assert G.errno_text(OSError("No Errno Here")) == "no errno here"


# --- RFC 3339 ----------------------------------------------------------------------------------


def test_parse_rfc3339() -> None:
    assert G.parse_rfc3339("1970-01-01T00:00:00Z") == 0.0
    assert G.parse_rfc3339("2024-05-01T14:00:00+02:00") == G.parse_rfc3339("2024-05-01T12:00:00Z")
    nanos = G.parse_rfc3339("2024-05-01T12:00:00.123456789Z")  # Go writes up to 9 digits
    assert nanos - G.parse_rfc3339("2024-05-01T12:00:00Z") == pytest.approx(0.123456, abs=1e-6)
    assert (
        G.parse_rfc3339(" 2024-05-01T12:00:00.5Z\n")
        == G.parse_rfc3339("2024-05-01T12:00:00Z") + 0.5
    )
    for bad in ("", "yesterday", "2024-13-01T00:00:00Z"):
        with pytest.raises(ValueError):
            G.parse_rfc3339(bad)


def test_format_rfc3339() -> None:
    assert G.format_rfc3339(0) == "1970-01-01T00:00:00Z"
    assert G.format_rfc3339(1714564800.9) == "2024-05-01T12:00:00Z"  # metav1.Time: whole seconds
    assert G.format_rfc3339_micro(1.5) == "1970-01-01T00:00:01.500000Z"
    now = G.format_rfc3339()
    assert G.format_rfc3339(G.parse_rfc3339(now)) == now
    micro = G.format_rfc3339_micro(1714564800.25)
    assert G.parse_rfc3339(micro) == 1714564800.25
