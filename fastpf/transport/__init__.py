"""The port-forward engine, both roles, on uvloop (or plain asyncio). See docs/ARCHITECTURE.md.

Server (`fastpf.serve`):  kubelet.accept_portforward(transport, request, pod, options)
                          kubelet.shutdown_all(timeout)
Client (`fastpf.client`): conn = await upgrade.connect(dialer, path, protocol, ports)
                          SPDY/tunnel: err = await conn.open_stream({...}); data = ...
                          channel:     await conn.ready(); ch = conn.channels[i]
                          result = await relay.relay(data_or_channel, sock)

Modules: handshake (sans-IO negotiation, h11 heads), spdy (SpdyConnection/SpdyStream),
channel (ChannelConnection/PortChannel), relay (socket pump), upgrade (client dial + 101
check), kubelet (server semantics), _base (shared session plumbing and the relay contract).
Submodules import the compiled codec (`fastpf._frames`); this package module imports nothing.
"""
