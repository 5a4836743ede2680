"""fastpf/_frames.pxd is a contract another extension can build on.

A small Cython module cimports the decoder classes, the inline byte helpers and mask_bytes
(exported through the module's C-API capsule), is compiled against the installed extension and
reads a decoder's fields at C level. Compiling takes a while on the 2-core CI machine, so the
build runs in CI (FASTPF_CI=1) or with FASTPF_PACKAGING=1; the capsule check always runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastpf import _frames as F

REPO = Path(__file__).resolve().parents[2]
SLOW = os.environ.get("FASTPF_CI") == "1" or os.environ.get("FASTPF_PACKAGING") == "1"

PROBE = textwrap.dedent(
    """
    # cython: language_level=3
    from fastpf._frames cimport (
        C_DATA, C_WS_BINARY, SpdyDecoder, WsDecoder, load_be32, mask_bytes, store_be32,
    )

    def spdy_state(SpdyDecoder dec):
        # C-level fields of the shared receive buffer
        return dec._start, dec._end, dec._exported

    def ws_limit(WsDecoder dec):
        return dec._max_message

    def be32_roundtrip(unsigned int v):
        cdef unsigned char b[4]
        store_be32(b, v)
        return load_be32(b)

    def mask(bytearray data, bytes key):
        mask_bytes(<unsigned char*>data, len(data), <const unsigned char*>key, 0)
        return bytes(data)

    CONSTANTS = (C_DATA, C_WS_BINARY)
    """
)

SETUP = textwrap.dedent(
    """
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    setup(
        ext_modules=cythonize(
            [Extension("probe", ["probe.pyx"])],
            include_path=[{repo!r}],
            language_level=3,
        ),
        script_args=["build_ext", "--inplace", "-q"],
    )
    """
)


def test_mask_bytes_is_exported_through_the_capsule() -> None:
    capi = F.__pyx_capi__  # type: ignore[attr-defined]
    assert "mask_bytes" in capi


@pytest.mark.skipif(not SLOW, reason="compiles an extension (~30 s): CI only (FASTPF_CI=1)")
def test_another_extension_cimports_the_contract(tmp_path: Path) -> None:
    (tmp_path / "probe.pyx").write_text(PROBE)
    (tmp_path / "setup.py").write_text(SETUP.format(repo=str(REPO)))
    r = subprocess.run(
        [sys.executable, "setup.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    check = textwrap.dedent(
        """
        import probe
        from fastpf import _frames as F

        dec = F.SpdyDecoder()
        dec.feed(F.SpdyEncoder().data(1, b"abc") + b"\\x00")
        assert dec.next_frame() is not None
        start, end, exported = probe.spdy_state(dec)
        assert (start, end, exported) == (11, 12, True), (start, end, exported)
        assert probe.ws_limit(F.WsDecoder(True, max_message=4096)) == 4096
        assert probe.be32_roundtrip(0xDEADBEEF) == 0xDEADBEEF
        key = b"\\x01\\x02\\x03\\x04"
        data = bytearray(b"hello world")
        expected = bytearray(data)
        F.mask_inplace(expected, key)
        assert probe.mask(data, key) == bytes(expected)
        assert probe.CONSTANTS == (F.DATA, F.WS_BINARY)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
