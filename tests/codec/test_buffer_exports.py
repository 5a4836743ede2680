"""buffer_exported(): CPython's export count and the portable resize probe agree.

The relay reuses a read buffer only when nothing still holds a view of it (a transport's
pending write, a payload handed out). On CPython buffer_exported() reads the private export
count; everywhere else it falls back to buffer_exported_portable(). Both paths run here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpf import _frames as F

Probe = Callable[[bytearray], bool]
PATHS: list[Probe] = [F.buffer_exported, F.buffer_exported_portable]


@pytest.mark.parametrize("exported", PATHS, ids=["export-count", "resize-probe"])
def test_views_hold_the_export_until_released(exported: Probe) -> None:
    buf = F.alloc_buffer(1024)
    buf[:] = bytes(range(256)) * 4
    before = bytes(buf)
    assert not exported(buf)
    view = memoryview(buf)[16:]
    assert exported(buf)
    inner = view[:8]  # a view of a view holds the export too
    view.release()
    assert exported(buf)
    inner.release()
    assert not exported(buf)
    # The probe leaves the bytes and the length exactly as they were.
    assert bytes(buf) == before


@pytest.mark.parametrize("exported", PATHS, ids=["export-count", "resize-probe"])
def test_empty_and_front_trimmed_buffers(exported: Probe) -> None:
    empty = bytearray()
    assert not exported(empty)
    with memoryview(empty):
        assert exported(empty)
    assert not exported(empty)
    assert empty == bytearray()
    trimmed = bytearray(b"abcdefgh")
    del trimmed[:3]  # CPython keeps an offset into the allocation
    assert not exported(trimmed)
    with memoryview(trimmed)[1:2]:
        assert exported(trimmed)
    assert trimmed == bytearray(b"defgh")


@pytest.mark.parametrize("exported", PATHS, ids=["export-count", "resize-probe"])
def test_only_bytearrays(exported: Probe) -> None:
    with pytest.raises(TypeError):
        exported(b"bytes")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=64),
    views=st.lists(st.tuples(st.integers(0, 64), st.integers(0, 64)), max_size=4),
    keep=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_both_paths_agree(data: bytes, views: list[tuple[int, int]], keep: list[bool]) -> None:
    buf = bytearray(data)
    held = [memoryview(buf)[a:b] for a, b in views]
    for view, k in zip(held, keep, strict=False):
        if not k:
            view.release()
    expected = any(k for _, k in zip(held, keep, strict=False))
    assert F.buffer_exported(buf) is expected
    assert F.buffer_exported_portable(buf) is expected
    assert bytes(buf) == data
    for view in held:
        view.release()
    assert not F.buffer_exported(buf) and not F.buffer_exported_portable(buf)
