"""DirectSSLObject: the memory-BIO TLS object whose read/write/pending are the `_ssl` C methods
(no Python frame per TLS record). Same results as ssl.SSLObject, through a real handshake over
memory BIOs, and through the event loops' TLS transports end to end."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from fastpf.loop import new_event_loop
from fastpf.serve import certs
from fastpf.tls_suites import DirectSSLObject, direct_io


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    material = certs.generate(["localhost", "127.0.0.1"])
    server = certs.server_context(material)
    client = ssl.create_default_context(cadata=material.ca_pem.decode())
    return server, direct_io(client)


def _pump(a: ssl.SSLObject, a_out: ssl.MemoryBIO, b_in: ssl.MemoryBIO) -> None:
    data = a_out.read()
    if data:
        b_in.write(data)


def test_direct_object_is_direct_and_behaves_like_sslobject() -> None:
    server_ctx, client_ctx = _contexts()
    assert server_ctx.sslobject_class is DirectSSLObject
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    assert isinstance(client, DirectSSLObject)
    # the C methods themselves, bound on the instance
    assert type(client.read).__name__ == "builtin_function_or_method"
    assert type(client.pending).__name__ == "builtin_function_or_method"
    done = {"c": False, "s": False}
    for _ in range(20):  # bounded handshake
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        _pump(client, c_out, s_in)
        _pump(server, s_out, c_in)
        if all(done.values()):
            break
    assert all(done.values())
    payload = bytes(range(256)) * 300  # several records
    assert server.write(payload) == len(payload)
    _pump(server, s_out, c_in)
    got = bytearray()
    buf = bytearray(50_000)
    for _ in range(100):  # bounded
        try:
            n = int(client.read(len(buf), buf))  # the (size, buffer) form the event loops use
        except ssl.SSLWantReadError:
            break
        got += buf[:n]
    assert bytes(got) == payload
    assert client.pending() == 0
    with pytest.raises(ssl.SSLWantReadError):
        client.read(10)


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_event_loop_tls_with_direct_objects(loop_kind: str) -> None:
    server_ctx, client_ctx = _contexts()
    size = 3 << 20

    async def body() -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readexactly(4)
            writer.write(request * (size // 4))
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"abcd")
        data = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
        srv.close()
        await srv.wait_closed()
        return data

    loop = new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        data = loop.run_until_complete(body())
    finally:
        loop.close()
    assert data == b"abcd" * (size // 4)
