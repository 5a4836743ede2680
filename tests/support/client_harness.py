"""Helpers for the client tests (no tests here): certificates, a tiny HTTPS API server that
records what it receives, an HTTP CONNECT proxy and a SOCKS5 proxy. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

import h11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Pki:
    ca_pem: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    other_ca_pem: bytes  # a CA that signed nothing here (bad-CA tests)


def make_pki(cn: str = "alice") -> Pki:
    now = dt.datetime.now(dt.timezone.utc)

    def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .sign(key, hashes.SHA256()))
        return cert, key

    ca_cert, ca_key = ca()
    other, _ = ca()

    def leaf(common: str, server: bool) -> tuple[bytes, bytes]:
        key = _key()
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
             .issuer_name(ca_cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(hours=1))
             .not_valid_after(now + dt.timedelta(days=1)))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
                x509.DNSName("api.test")]), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        cert = b.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    scert, skey = leaf("localhost", True)
    ccert, ckey = leaf(cn, False)
    return Pki(ca_cert.public_bytes(serialization.Encoding.PEM), scert, skey, ccert, ckey,
               other.public_bytes(serialization.Encoding.PEM))


def write(path: str, data: bytes | str, mode: int = 0o600) -> str:
    with open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    os.chmod(path, mode)
    return path


def pod_json(name: str, phase: str = "Running", ports: list[dict[str, Any]] | None = None,
             labels: dict[str, str] | None = None, namespace: str = "default") -> dict[str, Any]:
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "labels": labels or {}, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": phase},
    }


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    peer_cn: str | None


@dataclass
class MiniApi:
    """HTTPS (or HTTP) JSON server. `routes[path] = (status, obj)`; unknown paths 404 Status.
    `tokens`: accepted bearer tokens (None = no check); `basic`: accepted "user:pass"."""

    pki: Pki | None = None
    require_client_cert: bool = False
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    tokens: set[str] | None = None
    basic: str | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self, tmpdir: str) -> MiniApi:
        ctx = None
        if self.pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            cert = write(os.path.join(tmpdir, "srv.crt"), self.pki.server_cert)
            key = write(os.path.join(tmpdir, "srv.key"), self.pki.server_key)
            ctx.load_cert_chain(cert, key)
            ctx.set_alpn_protocols(["http/1.1"])
            if self.require_client_cert:
                ctx.verify_mode = ssl.CERT_OPTIONAL
                ctx.load_verify_locations(cadata=self.pki.ca_pem.decode())
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _authorized(self, headers: dict[str, str], peer_cn: str | None) -> bool:
        if self.require_client_cert and peer_cn is None:
            return False
        auth = headers.get("authorization", "")
        if self.tokens is not None and auth.removeprefix("Bearer ") not in self.tokens:
            return False
        if self.basic is not None:
            import base64

            want = "Basic " + base64.b64encode(self.basic.encode()).decode()
            if auth != want:
                return False
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peer_cn = None
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None:
            cert = sslobj.getpeercert()
            if cert:
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            peer_cn = v
        try:
            for _ in range(100):  # requests per connection
                req = None
                for _ in range(1000):
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data:
                            return
                        continue
                    if isinstance(ev, h11.Request):
                        req = ev
                    if isinstance(ev, h11.EndOfMessage):
                        break
                    if isinstance(ev, h11.ConnectionClosed):
                        return
                assert req is not None
                headers = {k.decode().lower(): v.decode() for k, v in req.headers}
                target = req.target.decode()
                self.seen.append(Seen(req.method.decode(), target, headers, peer_cn))
                path = target.split("?")[0]
                if not self._authorized(headers, peer_cn):
                    status, obj = 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": "Unauthorized", "reason": "Unauthorized",
                                        "code": 401}
                else:
                    status, obj = self.routes.get(path, (404, {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": f"{path} not found", "reason": "NotFound", "code": 404}))
                body = json.dumps(obj).encode()
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])))
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(1 << 30):
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ConnectionError):
        pass


@dataclass
class Proxy:
    """kind "http": CONNECT proxy (optionally requiring Basic `auth`); kind "socks5"."""

    kind: str = "http"
    auth: str | None = None
    targets: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Future[Any]] = field(default_factory=set)

    async def start(self) -> Proxy:
        handler = self._http if self.kind == "http" else self._socks
        self._server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        cred = f"{self.auth}@" if self.auth else ""
        scheme = "http" if self.kind == "http" else "socks5"
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)

    async def _splice(self, host: str, port: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, reply: bytes) -> None:
        r2, w2 = await asyncio.open_connection(host, port)
        writer.write(reply)
        t = asyncio.ensure_future(asyncio.gather(_pipe(reader, w2), _pipe(r2, writer)))
        self._tasks.add(t)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        finally:
            self._tasks.discard(t)
            w2.close()
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
                   for ln in lines[1:] if ":" in ln}
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        if self.auth is not None:
            import base64

            want = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if headers.get("proxy-authorization") != want:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b"Content-Length: 0\r\n\r\n")
                writer.close()
                return
        self.targets.append(target)
        host, _, port = target.rpartition(":")
        await self._splice(host.strip("[]"), int(port), reader, writer,
                           b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ver, n = await reader.readexactly(2)
        methods = await reader.readexactly(n)
        if self.auth is not None:
            if 2 not in methods:
                writer.write(b"\x05\xff")
                writer.close()
                return
            writer.write(b"\x05\x02")
            _, ulen = await reader.readexactly(2)
            user = await reader.readexactly(ulen)
            (plen,) = await reader.readexactly(1)
            pw = await reader.readexactly(plen)
            ok = f"{user.decode()}:{pw.decode()}" == self.auth
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                writer.close()
                return
        else:
            writer.write(b"\x05\x00")
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.ip_address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.ip_address(await reader.readexactly(16)))
        else:
            (ln,) = await reader.readexactly(1)
            host = (await reader.readexactly(ln)).decode()
        (port,) = struct.unpack(">H", await reader.readexactly(2))
        self.targets.append(f"{host}:{port}")
        await self._splice(host, port, reader, writer, b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
