"""The `facecodec signal` server and its client: pairs two peers in a room and relays SDP.

Protocol (JSON text frames over one WebSocket per peer):

    client -> server   {"type": "join", "room": "<[A-Za-z0-9_-]{1,64}>"}
                       {"type": "offer" | "answer", "sdp": "<session description>"}
                       {"type": "bye"}                 leave the room (the other side is told)
    server -> client   {"type": "joined", "room": ..., "peers": n}
                       {"type": "ready", "initiator": bool}   both peers present; the one that
                                                      waited longer makes the offer
                       {"type": "offer" | "answer", "sdp": ...}   relayed from the other peer
                       {"type": "bye"}                 the other peer left or dropped
                       {"type": "error", "message": ...}

The server trusts nothing: every message is size-checked, schema-checked and rate-limited, and a
misbehaving connection gets an error reply or is closed without disturbing anyone else.

Over the internet run it with TLS (`--cert`, `--key`: wss://). The SDP it relays carries each
peer's DTLS fingerprint, which is what authenticates the media: whoever can rewrite the
signaling in transit can sit in the middle of the call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from facecodec.errors import FacecodecError
from facecodec.files import path_arg
from facecodec.stream.shutdown import until_sigterm
from facecodec.stream.wire import untrusted_json

ROOM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MESSAGE_TYPES = frozenset({"join", "offer", "answer", "bye"})


# The most the server's options may ask: a session description is a few KiB, and a peer
# sends a few messages a call.
MAX_MESSAGE_KB = 16384
MAX_RATE_PER_S = 1000.0


@dataclass(frozen=True, slots=True)
class SignalLimits:
    max_message_bytes: int = 64 * 1024  # an SDP with two data channels and audio is ~2 KiB
    rate_per_s: float = 10.0  # steady message rate per connection
    burst: int = 20
    max_errors: int = 5  # protocol errors tolerated before the connection is closed
    max_connections: int = 256
    # From one address: a call takes one; this leaves room for an office behind one NAT,
    # but not for one client to take every connection the server has.
    max_per_address: int = 32
    join_timeout_s: float = 30.0
    # A connection must have sent its whole HTTP request (the WebSocket upgrade) by then:
    # idle or slowly sent requests would otherwise hold sockets until the process has none.
    request_timeout_s: float = 10.0


class ProtocolError(Exception):
    """A message this server refuses; the text goes back to the client."""


def validate_message(raw: str, limits: SignalLimits) -> dict[str, Any]:
    """Parse and schema-check one client message; raise ProtocolError on anything else."""
    if len(raw.encode()) > limits.max_message_bytes:
        raise ProtocolError("message too large")
    try:
        msg = untrusted_json(raw)
    except ValueError:
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise ProtocolError(f"type must be one of {sorted(MESSAGE_TYPES)}")
    allowed = {"join": {"type", "room"}, "offer": {"type", "sdp"}, "answer": {"type", "sdp"}}
    extra = set(msg) - allowed.get(kind, {"type"})
    if extra:
        raise ProtocolError(f"unexpected field(s) in {kind}: {sorted(extra)}")
    if kind == "join":
        room = msg.get("room")
        if not isinstance(room, str) or not ROOM_PATTERN.fullmatch(room):
            raise ProtocolError("room must match [A-Za-z0-9_-]{1,64}")
    if kind in ("offer", "answer"):
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise ProtocolError(f"{kind} needs an SDP string starting with v=0")
    return msg


@dataclass
class _TokenBucket:
    rate: float
    burst: int
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class SignalingServer:
    """Rooms of at most two peers; relays offer/answer/bye between them."""

    def __init__(self, limits: SignalLimits | None = None) -> None:
        self.limits = limits or SignalLimits()
        self.rooms: dict[str, list[web.WebSocketResponse]] = {}
        self._connections = 0
        self._runner: web.AppRunner | None = None
        self._by_address: Counter[str] = Counter()  # open connections by client address
        _log_one_line(logging.getLogger("aiohttp.server"))
        self.app = web.Application()
        self.app.router.add_get("/", self._handle)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> str:
        """Listen and return the ws:// URL, wss:// with `tls` (port 0 picks a free port)."""
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0,
                                     keepalive_timeout=self.limits.request_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        return f"{'wss' if tls else 'ws'}://{shown}:{bound[1]}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._connections >= self.limits.max_connections:
            return web.Response(status=503, text="too many connections")
        address = request.remote or ""
        if self._by_address[address] >= self.limits.max_per_address:
            return web.Response(status=503, text="too many connections from this address")
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        self._connections += 1
        self._by_address[address] += 1
        room: str | None = None
        try:
            room = await self._serve(ws)
        finally:
            self._connections -= 1
            self._by_address[address] -= 1
            if not self._by_address[address]:
                del self._by_address[address]
            if room is not None:
                await self._leave(ws, room)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse) -> str | None:
        """Handle one connection's messages; return the room it is in when it goes away."""
        bucket = _TokenBucket(self.limits.rate_per_s, self.limits.burst)
        errors = 0
        room: str | None = None
        # From the connection, not from each message: aiohttp's own receive timeout starts
        # again at every ping, so a client that only pinged was never closed.
        join_by = asyncio.get_running_loop().time() + self.limits.join_timeout_s
        while not ws.closed:
            try:
                async with asyncio.timeout_at(join_by if room is None else None):
                    frame = await ws.receive()
            except TimeoutError:
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"join timeout")
                break
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if frame.type == WSMsgType.ERROR:  # e.g. a frame over max_msg_size: aiohttp closes
                break
            if not bucket.take():
                await _send(ws, {"type": "error", "message": "rate limit exceeded"})
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"rate limit")
                break
            try:
                if frame.type != WSMsgType.TEXT:
                    raise ProtocolError("only JSON text messages are accepted")
                msg = validate_message(frame.data, self.limits)
                room = await self._dispatch(ws, room, msg)
            except ProtocolError as exc:
                errors += 1
                await _send(ws, {"type": "error", "message": str(exc)})
                if errors >= self.limits.max_errors:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many errors")
                    break
        return room

    async def _dispatch(
        self, ws: web.WebSocketResponse, room: str | None, msg: dict[str, Any]
    ) -> str | None:
        kind = msg["type"]
        if kind == "join":
            if room is not None:
                raise ProtocolError(f"already in room {room}")
            members = self.rooms.setdefault(msg["room"], [])
            if len(members) >= 2:
                raise ProtocolError("room is full")
            members.append(ws)
            await _send(ws, {"type": "joined", "room": msg["room"], "peers": len(members)})
            if len(members) == 2:
                await _send(members[0], {"type": "ready", "initiator": True})
                await _send(members[1], {"type": "ready", "initiator": False})
            return msg["room"]
        if room is None:
            raise ProtocolError(f"join a room before sending {kind}")
        if kind == "bye":
            await self._leave(ws, room)
            return None
        other = self._other(ws, room)
        if other is None:
            raise ProtocolError("no other peer in the room")
        await _send(other, msg)
        return room

    def _other(self, ws: web.WebSocketResponse, room: str) -> web.WebSocketResponse | None:
        return next((m for m in self.rooms.get(room, []) if m is not ws), None)

    async def _leave(self, ws: web.WebSocketResponse, room: str) -> None:
        members = self.rooms.get(room, [])
        if ws in members:
            members.remove(ws)
            for other in members:
                await _send(other, {"type": "bye"})
        if not members:
            self.rooms.pop(room, None)


MAX_LOGGED = 300  # characters of a logged exception: a request's junk is not worth more


class _OneLine(logging.Filter):
    """A logged exception as one line (its type and text), not a traceback: aiohttp logs
    every malformed HTTP request it is sent with one, so anyone could fill the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = " ".join(f"{record.getMessage()}: {type(exc).__name__}: {exc}".split())
            record.msg, record.args = text[:MAX_LOGGED], ()
            record.exc_info, record.exc_text = None, None
        return True


def _log_one_line(logger: logging.Logger) -> None:
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())


async def _send(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
    if ws.closed:
        return
    try:
        await ws.send_str(json.dumps(msg))
    except (ConnectionError, RuntimeError):
        pass  # the peer went away mid-send; its own handler cleans up


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """The server's TLS from a certificate chain and its private key (PEM files)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise FacecodecError(f"cannot use TLS certificate {cert} with key {key}: "
                             f"{exc.strerror or exc}") from None
    return context


def check_port(flag: str, port: int) -> None:
    """A TCP port to listen on (0: any free one)."""
    if not 0 <= port <= 65535:
        raise FacecodecError(f"{flag} must be within 0..65535 (0: any free port), got {port}")


def check_url(url: str) -> None:
    if not url.startswith(("ws://", "wss://")):
        raise FacecodecError(f"signaling server {url}: not a ws:// or wss:// URL")


def client_tls(ca: Path | None) -> ssl.SSLContext | bool:
    """How a client checks a wss:// server: against the system's authorities, or against
    `ca` (a PEM file: a private authority, or a self-signed server certificate)."""
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise FacecodecError(f"cannot use {ca} as a certificate authority: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None


class SignalingClient:
    """One peer's connection to the signaling server."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws

    @classmethod
    async def connect(
        cls, url: str, timeout: float = 10.0, ca: Path | None = None
    ) -> SignalingClient:
        """`ca`: the authority a wss:// server's certificate must come from (client_tls)."""
        check_url(url)
        tls = client_tls(ca)
        session = aiohttp.ClientSession()
        try:
            # The whole opening handshake is timed: aiohttp's own limit on it is 5 minutes.
            async with asyncio.timeout(timeout):
                ws = await session.ws_connect(
                    url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), ssl=tls)
        except TimeoutError:
            await session.close()
            raise FacecodecError(f"signaling server {url} did not answer in {timeout:g} s "
                                 "(is it a facecodec signal server?)") from None
        except aiohttp.InvalidURL:
            await session.close()
            raise FacecodecError(f"{url} is not a valid signaling server address") from None
        except (aiohttp.ClientError, OSError) as exc:
            await session.close()
            raise FacecodecError(f"cannot reach signaling server {url}: {exc}") from None
        return cls(session, ws)

    async def send(self, msg: dict[str, Any]) -> None:
        await self._ws.send_str(json.dumps(msg))

    async def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """Next server message; {"type": "closed"} once the server is gone. `timeout` is
        over the whole wait (aiohttp's own starts again at each of the server's pings)."""
        try:
            async with asyncio.timeout(timeout):
                frame = await self._ws.receive()
        except TimeoutError:
            raise FacecodecError("signaling server did not answer in time") from None
        if frame.type == WSMsgType.BINARY:
            raise FacecodecError("signaling server sent a malformed message")
        if frame.type != WSMsgType.TEXT:
            return {"type": "closed"}
        try:
            msg = untrusted_json(frame.data)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            raise FacecodecError("signaling server sent a malformed message")
        return msg

    async def join(self, room: str, timeout: float = 10.0) -> int:
        """Join a room; return how many peers are in it now."""
        await self.send({"type": "join", "room": room})
        reply = await self.receive(timeout)
        if reply.get("type") == "closed":
            raise FacecodecError(f"cannot join room {room!r}: the signaling server closed "
                                 "the connection")
        if reply.get("type") != "joined":
            raise FacecodecError(f"cannot join room {room!r}: {reply.get('message', reply)}")
        peers = reply.get("peers")
        if type(peers) is not int or not 1 <= peers <= 2:
            raise FacecodecError("signaling server sent a malformed message")
        return peers

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def close(self) -> None:
        await self._ws.close()
        await self._session.close()


def add_signal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0 picks a free one)")
    parser.add_argument(
        "--max-message-kb", type=int, default=64, help="largest accepted message, KiB"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second per peer")
    parser.add_argument("--cert", type=path_arg, help="TLS certificate chain (PEM): serve wss://")
    parser.add_argument("--key", type=path_arg, help="the certificate's private key (PEM)")


def signal_main(args: argparse.Namespace) -> int:
    """Run the signaling server until interrupted."""
    check_port("--port", args.port)
    if not 1 <= args.max_message_kb <= MAX_MESSAGE_KB:
        raise FacecodecError(f"--max-message-kb must be within 1..{MAX_MESSAGE_KB}, "
                             f"got {args.max_message_kb}")
    if not 0 < args.rate <= MAX_RATE_PER_S:  # also refuses NaN
        raise FacecodecError(f"--rate must be above 0 and at most {MAX_RATE_PER_S:g} messages "
                             f"a second, got {args.rate:g}")
    limits = SignalLimits(max_message_bytes=args.max_message_kb * 1024, rate_per_s=args.rate)
    if (args.cert is None) != (args.key is None):
        raise FacecodecError("--cert and --key go together")
    tls = server_tls(args.cert, args.key) if args.cert is not None else None

    async def serve() -> None:
        server = SignalingServer(limits)
        try:
            url = await server.start(args.host, args.port, tls)
        except OSError as exc:
            raise FacecodecError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        print(f"signaling server on {url} (Ctrl-C or SIGTERM to stop)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(until_sigterm(serve()))
    except KeyboardInterrupt:
        pass
    return 0
