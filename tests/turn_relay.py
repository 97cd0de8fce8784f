"""A small TURN relay over UDP (RFC 8656), enough for aioice's client: long-term credentials
(401 with realm and nonce, then requests signed with MESSAGE-INTEGRITY), ALLOCATE, REFRESH,
CREATE-PERMISSION, CHANNEL-BIND, Send/Data indications and ChannelData. For tests of calls
whose media must go through a relay; it counts what it relays."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from aioice import stun
from aioice.turn import is_channel_data, make_integrity_key

REALM = "facecodec-test"
NONCE = "fixed-test-nonce"
LIFETIME_S = 600


@dataclass
class _Allocation:
    relay: asyncio.DatagramTransport
    channels: dict[int, tuple[str, int]] = field(default_factory=dict)
    peers: dict[tuple[str, int], int] = field(default_factory=dict)


class _RelaySide(asyncio.DatagramProtocol):
    """An allocation's relayed address: what a peer sends to it goes to the client."""

    def __init__(self, server: TurnRelay, client: tuple[str, int]) -> None:
        self.server, self.client = server, client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.to_client(self.client, data, addr)


class TurnRelay(asyncio.DatagramProtocol):
    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.key = make_integrity_key(username, REALM, password)
        self.allocations: dict[tuple[str, int], _Allocation] = {}
        self.relayed_bytes = 0  # payload bytes carried between clients and peers
        self.refused = 0  # requests refused for their credentials
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _send(self, message: stun.Message, addr: tuple[str, int], sign: bool = True) -> None:
        if sign:
            message.add_message_integrity(self.key)
        assert self.transport is not None
        self.transport.sendto(bytes(message), addr)

    def to_client(self, client: tuple[str, int], data: bytes, peer: tuple[str, int]) -> None:
        alloc = self.allocations.get(client)
        if alloc is None or self.transport is None:
            return
        self.relayed_bytes += len(data)
        channel = alloc.peers.get(peer)
        if channel is not None:
            self.transport.sendto(struct.pack("!HH", channel, len(data)) + data, client)
        else:
            self._send(stun.Message(stun.Method.DATA, stun.Class.INDICATION, attributes={
                "XOR-PEER-ADDRESS": peer, "DATA": data}), client, sign=False)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        alloc = self.allocations.get(addr)
        if len(data) >= 4 and is_channel_data(data):
            channel, length = struct.unpack("!HH", data[:4])
            if alloc is not None and channel in alloc.channels:
                self.relayed_bytes += length
                alloc.relay.sendto(data[4:4 + length], alloc.channels[channel])
            return
        try:
            msg = stun.parse_message(data)
        except ValueError:
            return
        if msg.message_class == stun.Class.INDICATION:
            if msg.message_method == stun.Method.SEND and alloc is not None:
                payload = msg.attributes.get("DATA", b"")
                self.relayed_bytes += len(payload)
                alloc.relay.sendto(payload, msg.attributes["XOR-PEER-ADDRESS"])
            return
        if msg.message_class != stun.Class.REQUEST:
            return
        if (msg.attributes.get("USERNAME") != self.username
                or not msg.check_message_integrity(self.key)):
            self.refused += "USERNAME" in msg.attributes
            self._send(stun.Message(msg.message_method, stun.Class.ERROR, msg.transaction_id, {
                "ERROR-CODE": (401, "Unauthorized"), "REALM": REALM, "NONCE": NONCE.encode(),
            }), addr, sign=False)
            return
        asyncio.ensure_future(self._answer(msg, addr))

    async def _answer(self, msg: stun.Message, addr: tuple[str, int]) -> None:
        attrs: dict[str, object] = {}
        method = msg.message_method
        if method == stun.Method.ALLOCATE:
            if addr not in self.allocations:
                loop = asyncio.get_running_loop()
                relay, _ = await loop.create_datagram_endpoint(
                    lambda: _RelaySide(self, addr), local_addr=("127.0.0.1", 0))
                self.allocations[addr] = _Allocation(relay)
            relayed = self.allocations[addr].relay.get_extra_info("sockname")[:2]
            attrs = {"XOR-RELAYED-ADDRESS": relayed, "XOR-MAPPED-ADDRESS": addr,
                     "LIFETIME": LIFETIME_S}
        elif method == stun.Method.REFRESH:
            lifetime = msg.attributes.get("LIFETIME", LIFETIME_S)
            if lifetime == 0 and addr in self.allocations:
                self.allocations.pop(addr).relay.close()
            attrs = {"LIFETIME": lifetime}
        elif method == stun.Method.CHANNEL_BIND and addr in self.allocations:
            alloc = self.allocations[addr]
            number, peer = msg.attributes["CHANNEL-NUMBER"], msg.attributes["XOR-PEER-ADDRESS"]
            alloc.channels[number], alloc.peers[peer] = peer, number
        elif method != stun.Method.CREATE_PERMISSION:
            return
        self._send(stun.Message(method, stun.Class.RESPONSE, msg.transaction_id, attrs), addr)

    def close(self) -> None:
        for alloc in self.allocations.values():
            alloc.relay.close()
        if self.transport is not None:
            self.transport.close()
