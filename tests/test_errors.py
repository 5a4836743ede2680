"""One vocabulary: every exception lives in fastpf.errors, in one family, remote ones with their
wire code; wire constants are defined once (in the codec)."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pickle
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import fastpf
from fastpf import _frames as F
from fastpf import errors as E

PACKAGE = Path(fastpf.__file__).parent
FAMILIES = (E.LocalError, E.RemoteError, E.UnavailableError)
# Bases that are not themselves in one family: the root and ClientError (how the CLI prints a
# failure: one line and an exit code; its direct raises are dial/proxy/exec failures).
FAMILY_FREE = {E.FastpfError, E.ClientError, *FAMILIES}


def _modules() -> list[ModuleType]:
    mods = [fastpf]
    for info in pkgutil.walk_packages(fastpf.__path__, "fastpf."):
        if info.name.endswith("__main__"):
            continue
        mods.append(importlib.import_module(info.name))
    return mods


def _exception_classes(mod: ModuleType) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(mod).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == mod.__name__
    ]


def test_every_exception_class_is_defined_in_errors() -> None:
    mods = _modules()
    assert len(mods) > 40  # the walk found the package (client, serve, transport, codec)
    elsewhere = {
        f"{mod.__name__}.{cls.__name__}"
        for mod in mods
        if mod is not E
        for cls in _exception_classes(mod)
    }
    assert elsewhere == set()


def test_no_class_statement_derives_from_an_exception_outside_errors() -> None:
    # Also catches classes defined inside functions, which the import walk above cannot see.
    names = {n for n in dir(E) if inspect.isclass(getattr(E, n))} | {
        n for n in dir(builtins) if n.endswith(("Error", "Exception", "Exit", "Interrupt"))
    }
    pattern = re.compile(r"^\s*(?:cdef\s+)?class\s+(\w+)\s*\(([^)]*)\)", re.M)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.pyx")):
        if path.name == "errors.py":
            continue
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            bases = {b.strip().split(".")[-1].split("[")[0] for b in match.group(2).split(",")}
            if bases & names or any(b.endswith(("Error", "Exception")) for b in bases):
                found.append(f"{path.relative_to(PACKAGE)}: {match.group(1)}")
    assert found == []


def _public_classes() -> list[type[E.FastpfError]]:
    out = []
    for name in E.__all__:
        cls = getattr(E, name)
        assert issubclass(cls, E.FastpfError), name
        out.append(cls)
    return out


def test_all_lists_every_class_and_every_class_has_one_family() -> None:
    defined = {c.__name__ for c in _exception_classes(E)}
    assert defined == set(E.__all__)
    for cls in _public_classes():
        if cls in FAMILY_FREE:
            continue
        families = [f.__name__ for f in FAMILIES if issubclass(cls, f)]
        assert len(families) == 1, (cls.__name__, families)


# One instance per remote class, built with a distinctive wire code (the expected value).
REMOTE_SAMPLES: dict[type[E.RemoteError], tuple[E.RemoteError, int]] = {
    E.SpdySessionError: (
        E.SpdySessionError("ping id 0", goaway_status=F.GOAWAY_INTERNAL_ERROR),
        F.GOAWAY_INTERNAL_ERROR,
    ),
    E.WebSocketError: (E.WebSocketError("too big", close_code=1009), 1009),
    E.StreamResetError: (E.StreamResetError(status=F.RST_REFUSED_STREAM), F.RST_REFUSED_STREAM),
    E.HandshakeError: (E.HandshakeError("403 Forbidden", status=403), 403),
    E.UpgradeRefusedError: (E.UpgradeRefusedError("no websocket", 400, fallback=True), 400),
    E.UpgradeRedirect: (E.UpgradeRedirect(307, "https://elsewhere/"), 307),
    E.ApiError: (E.ApiError('pods "x" not found', status=404, reason="NotFound"), 404),
}


def test_every_remote_error_carries_its_wire_code() -> None:
    remote = {c for c in _public_classes() if issubclass(c, E.RemoteError)}
    abstract = {E.RemoteError, E.ProtocolError}
    assert remote - abstract == set(REMOTE_SAMPLES)  # a new remote class needs a sample here
    for cls, (exc, code) in REMOTE_SAMPLES.items():
        assert type(exc) is cls
        assert cls.wire_field, cls.__name__
        assert getattr(exc, cls.wire_field) == code
        assert exc.wire_code == code
        assert "\n" not in str(exc) and str(exc)


def test_local_and_unavailable_errors_carry_no_wire_code() -> None:
    for cls in _public_classes():
        if issubclass(cls, (E.LocalError, E.UnavailableError)):
            assert not hasattr(cls, "wire_code"), cls.__name__


def test_default_wire_codes_are_the_codec_constants() -> None:
    assert E.SpdySessionError().goaway_status == F.GOAWAY_PROTOCOL_ERROR
    assert E.StreamResetError().status == F.RST_CANCEL
    assert E.WebSocketError("x").close_code == 1002  # RFC 6455 protocol error
    assert E.HandshakeError("x").status is None and E.HandshakeError("x").wire_code is None


def test_builtin_bases_callers_catch() -> None:
    # Callers catch these as the builtin kind (asyncio and kubectl's wording depend on it).
    assert issubclass(E.StreamTimeoutError, TimeoutError)
    assert issubclass(E.DeadPeerError, TimeoutError)
    for cls in (E.SessionClosedError, E.ChannelClosedError, E.PoolUnavailable):
        assert issubclass(cls, ConnectionError)
    assert issubclass(E.NotFound, LookupError)
    assert str(E.StreamTimeoutError()) == "Timeout occurred"
    assert str(E.StreamResetError()) == "Stream reset"
    usage = E.UsageError("unknown flag: --x")
    assert usage.line == "error: unknown flag: --x" and usage.exit_code == 1
    assert isinstance(usage, E.LocalError) and isinstance(usage, E.ClientError)


def test_protocol_errors_pickle_with_their_codes() -> None:
    s = E.SpdySessionError("bad ping", goaway_status=2)
    w = E.WebSocketError("too big", close_code=1009)
    h = E.HandshakeError("error upgrading connection: 403 Forbidden", status=403)
    for proto in (s, w):
        assert isinstance(proto, E.ProtocolError) and isinstance(proto, E.FastpfError)
    assert isinstance(h, E.RemoteError) and not isinstance(h, E.ProtocolError)
    assert str(s) == "bad ping" and str(h) == "error upgrading connection: 403 Forbidden"
    assert str(E.FastpfError()) == "FastpfError"
    everything: list[E.FastpfError] = [s, w, h]
    for e in everything:
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is type(e) and repr(e2) == repr(e)
    with pytest.raises(E.ProtocolError):
        raise w


# --- constants defined once --------------------------------------------------------------------

# A wire constant given a number anywhere (module or class level), or a frame-type name bound
# at module level. (An enum member such as the transition table's Action.GOAWAY is a decision,
# not a wire code, and an alias of one is no number.)
_REDEFINED = re.compile(
    r"^\s*_?(?:RST_[A-Z_]+|GOAWAY_[A-Z_]+|WS_(?:CONT|TEXT|BINARY|CLOSE|PING|PONG))"
    r"\s*(?::[^=]+)?=\s*\d"
    r"|^(?:DATA|SYN_STREAM|SYN_REPLY|RST_STREAM|SETTINGS|PING|GOAWAY|HEADERS|WINDOW_UPDATE)"
    r"\s*(?::[^=]+)?=[^=]",
    re.M,
)


def test_wire_constants_are_defined_only_in_the_codec() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for match in _REDEFINED.finditer(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(PACKAGE)}: {match.group(0).strip()}")
    assert found == []
    assert (F.RST_CANCEL, F.RST_REFUSED_STREAM, F.GOAWAY_PROTOCOL_ERROR, F.WS_CLOSE) == (5, 3, 1, 8)
