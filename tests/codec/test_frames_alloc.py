"""alloc_buffer(): read buffers that commit memory only as they are written.

A relay keeps one read buffer per connection; with zero-filled bytearrays every connection that
moved a few bytes pinned the whole buffer (about 290 MiB RSS at 1,000 connections)."""

from __future__ import annotations

import sys

import pytest

from fastpf import _frames as F

SIZE = 256 * 1024 + 64  # the relay's read buffer: 256 KiB plus header room
COUNT = 1000


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _growth_kib(make: object) -> int:
    before = _rss_kib()
    buffers = []
    for _ in range(COUNT):
        buf = make(SIZE)  # type: ignore[operator]
        buf[64:80] = b"a small request!"  # what an idle-ish connection reads
        buffers.append(buf)
    grown = _rss_kib() - before
    del buffers
    return grown


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_alloc_buffer_commits_only_written_pages() -> None:
    zero_filled = _growth_kib(bytearray)
    lazy = _growth_kib(F.alloc_buffer)
    assert zero_filled > COUNT * 200  # bytearray(n) touches every page: ~256 MiB
    assert lazy < zero_filled // 8, (lazy, zero_filled)


def test_alloc_buffer_is_a_writable_bytearray_of_that_size() -> None:
    buf = F.alloc_buffer(1 << 20)
    assert type(buf) is bytearray and len(buf) == 1 << 20
    F.pack_data_header(buf, 0, 1, F.FLAG_FIN, 3)
    buf[8:11] = b"abc"
    decoder = F.SpdyDecoder()
    decoder.feed(memoryview(buf)[:11])
    frame = decoder.next_frame()
    assert frame is not None and frame.payload is not None
    assert bytes(frame.payload) == b"abc" and frame.flags == F.FLAG_FIN
    assert len(F.alloc_buffer(0)) == 0
    with pytest.raises(ValueError):
        F.alloc_buffer(-1)


def test_buffer_exported_counts_live_views() -> None:
    buf = F.alloc_buffer(1024)
    assert not F.buffer_exported(buf)
    view = memoryview(buf)[16:]
    assert F.buffer_exported(buf)
    inner = view[:8]  # a view of a view holds the export too
    view.release()
    assert F.buffer_exported(buf)
    inner.release()
    assert not F.buffer_exported(buf)
    with pytest.raises(TypeError):
        F.buffer_exported(b"bytes")  # type: ignore[arg-type]
