"""The signaling server pairs peers and survives malformed or hostile input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import self_signed

from facecodec.errors import FacecodecError
from facecodec.stream.signaling import (
    ProtocolError,
    SignalingClient,
    SignalingServer,
    SignalLimits,
    server_tls,
    validate_message,
)

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"


def run(body: Callable[[str, SignalingServer], Awaitable[None]], **limits: Any) -> None:
    async def main() -> None:
        server = SignalingServer(SignalLimits(**limits))
        url = await server.start()
        try:
            await asyncio.wait_for(body(url, server), 15)
        finally:
            await server.stop()

    asyncio.run(main())


async def raw_ws(url: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    return session, await session.ws_connect(url)


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame = await ws.receive(timeout=5)
    assert frame.type == aiohttp.WSMsgType.TEXT, frame
    return json.loads(frame.data)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "hello"}', "type must be"),
        ('{"type": 5}', "type must be"),
        ('{"room": "a"}', "type must be"),
        ('{"type": "join"}', "room must match"),
        ('{"type": "join", "room": ""}', "room must match"),
        ('{"type": "join", "room": "a/b"}', "room must match"),
        ('{"type": "join", "room": "' + "x" * 65 + '"}', "room must match"),
        ('{"type": "join", "room": 7}', "room must match"),
        ('{"type": "join", "room": "a", "admin": true}', "unexpected field"),
        ('{"type": "offer", "sdp": 3}', "SDP string"),
        ('{"type": "answer", "sdp": "hello"}', "SDP string"),
        ('{"type": "bye", "sdp": "v=0"}', "unexpected field"),
        ('{"type": "offer", "sdp": "v=0' + "a" * 70000 + '"}', "too large"),
        ("[" * 30000 + "]" * 30000, "not valid JSON"),  # past the parser's depth
        ('{"a":' * 10000 + "1" + "}" * 10000, "not valid JSON"),
    ],
)
def test_validate_rejects(raw: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        validate_message(raw, SignalLimits())


def test_validate_accepts_well_formed() -> None:
    limits = SignalLimits()
    assert validate_message('{"type": "join", "room": "Ab_9-z"}', limits)["room"] == "Ab_9-z"
    assert validate_message(json.dumps({"type": "offer", "sdp": OFFER}), limits)["sdp"] == OFFER
    assert validate_message('{"type": "bye"}', limits) == {"type": "bye"}


def test_pairs_two_peers_and_relays() -> None:
    async def body(url: str, server: SignalingServer) -> None:
        a = await SignalingClient.connect(url)
        b = await SignalingClient.connect(url)
        assert await a.join("room1") == 1
        assert await b.join("room1") == 2
        assert await a.receive(5) == {"type": "ready", "initiator": True}
        assert await b.receive(5) == {"type": "ready", "initiator": False}
        await a.send({"type": "offer", "sdp": OFFER})
        assert await b.receive(5) == {"type": "offer", "sdp": OFFER}
        await b.send({"type": "answer", "sdp": OFFER + "a=x\r\n"})
        assert (await a.receive(5))["type"] == "answer"
        # A third peer is turned away; the two inside are undisturbed.
        c = await SignalingClient.connect(url)
        await c.send({"type": "join", "room": "room1"})
        assert await c.receive(5) == {"type": "error", "message": "room is full"}
        # bye is relayed and frees the slot, so the third peer can now join.
        await a.send({"type": "bye"})
        assert await b.receive(5) == {"type": "bye"}
        assert await c.join("room1") == 2
        assert await b.receive(5) == {"type": "ready", "initiator": True}
        for client in (a, b, c):
            await client.close()
        await asyncio.sleep(0.1)
        assert server.rooms == {}

    run(body)


def test_dropped_peer_is_announced() -> None:
    async def body(url: str, server: SignalingServer) -> None:
        a = await SignalingClient.connect(url)
        session, ws = await raw_ws(url)
        await a.join("r")
        await ws.send_str('{"type": "join", "room": "r"}')
        assert (await next_json(ws))["type"] == "joined"
        assert (await a.receive(5))["type"] == "ready"
        await session.close()  # drops without a bye
        assert await a.receive(5) == {"type": "bye"}
        assert server.rooms == {"r": server.rooms["r"]} and len(server.rooms["r"]) == 1
        await a.close()

    run(body)


def test_hostile_input_gets_errors_then_close() -> None:
    async def body(url: str, server: SignalingServer) -> None:
        # A well-behaved pair in another room must be unaffected by all of this.
        a = await SignalingClient.connect(url)
        b = await SignalingClient.connect(url)
        await a.join("calm")
        await b.join("calm")
        await a.receive(5)
        await b.receive(5)

        session, ws = await raw_ws(url)
        await ws.send_bytes(b"\x00\xff" * 10)
        assert "text" in (await next_json(ws))["message"]
        await ws.send_str("{bad json")
        assert "JSON" in (await next_json(ws))["message"]
        await ws.send_str('{"type": "offer", "sdp": "v=0"}')
        assert "join a room" in (await next_json(ws))["message"]
        await ws.send_str('{"type": "join", "room": "nobody-else"}')
        assert (await next_json(ws))["type"] == "joined"
        await ws.send_str('{"type": "offer", "sdp": "v=0"}')  # unknown peer: nobody to relay to
        assert "no other peer" in (await next_json(ws))["message"]
        await ws.send_str('{"type": "join", "room": "again"}')
        assert "already in room" in (await next_json(ws))["message"]
        # That was the fifth error: the server closes this connection.
        assert (await ws.receive(timeout=5)).type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        )
        await session.close()

        await a.send({"type": "offer", "sdp": OFFER})
        assert await b.receive(5) == {"type": "offer", "sdp": OFFER}
        await a.close()
        await b.close()

    run(body)


def test_huge_frame_closes_only_that_connection() -> None:
    async def body(url: str, server: SignalingServer) -> None:
        session, ws = await raw_ws(url)
        await ws.send_str("x" * 5000)
        frame = await ws.receive(timeout=5)
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await session.close()
        client = await SignalingClient.connect(url)
        assert await client.join("after") == 1
        await client.close()

    run(body, max_message_bytes=1024)


def test_one_address_cannot_take_every_connection() -> None:
    """A client holding many connections (joined, answering the heartbeat) is refused more
    past `max_per_address`; when it lets go, its address may connect again."""
    async def body(url: str, server: SignalingServer) -> None:
        held = [await raw_ws(url) for _ in range(3)]
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
        assert refused.value.status == 503
        await held[0][0].close()
        await asyncio.sleep(0.2)
        client = await SignalingClient.connect(url)
        assert await client.join("after") == 1
        await client.close()
        for session, _ in held[1:]:
            await session.close()

    run(body, max_per_address=3)


def test_a_malformed_http_request_is_logged_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp logs a request it cannot parse with a traceback: anyone could fill the log
    with them. The server logs one line each."""
    async def body(url: str, server: SignalingServer) -> None:
        host, port = url.removeprefix("ws://").rstrip("/").rsplit(":", 1)
        for request in (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
                        b"\x16\x03\x01garbage\r\n\r\n"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            await writer.drain()
            await reader.read()  # the server answers 400 and closes
            writer.close()
        client = await SignalingClient.connect(url)  # still serving
        assert await client.join("after") == 1
        await client.close()

    with caplog.at_level("DEBUG", logger="aiohttp.server"):
        run(body)
    assert caplog.records, "the bad requests were not logged"
    for record in caplog.records:
        assert record.exc_info is None and "\n" not in record.getMessage()


def test_a_request_sent_too_slowly_is_closed_but_a_waiting_peer_is_not() -> None:
    """A connection that sends nothing, or its HTTP request a line at a time, is closed
    after `request_timeout_s` (each held a socket for good); a peer that joined and waits
    for the other stays connected."""
    async def body(url: str, server: SignalingServer) -> None:
        host, port = url.removeprefix("ws://").rstrip("/").rsplit(":", 1)
        idle = await asyncio.open_connection(host, int(port))
        slow = await asyncio.open_connection(host, int(port))
        waiting = await SignalingClient.connect(url)
        assert await waiting.join("wait") == 1
        start = asyncio.get_running_loop().time()
        slow[1].write(b"GET / HTTP/1.1\r\n")
        for i in range(6):  # a header line every 0.3 s, never the end of the request
            await asyncio.sleep(0.3)
            if slow[1].is_closing() or slow[0].at_eof():
                break
            slow[1].write(b"X-%d: a\r\n" % i)
        assert await asyncio.wait_for(idle[0].read(), 5) == b""
        assert await asyncio.wait_for(slow[0].read(), 5) == b""
        assert asyncio.get_running_loop().time() - start < 4
        await asyncio.sleep(1.5)  # past the timeout: the waiting peer is still there
        assert not waiting.closed
        other = await SignalingClient.connect(url)
        assert await other.join("wait") == 2
        assert (await waiting.receive(5))["type"] == "ready"
        for _, writer in (idle, slow):
            writer.close()
        await other.close()
        await waiting.close()

    run(body, request_timeout_s=1.0)


def test_rate_limit() -> None:
    async def body(url: str, server: SignalingServer) -> None:
        session, ws = await raw_ws(url)
        await ws.send_str('{"type": "join", "room": "flood"}')
        for _ in range(10):
            await ws.send_str('{"type": "bye"}')
        messages = []
        while True:
            frame = await ws.receive(timeout=5)
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(json.loads(frame.data))
        assert {"type": "error", "message": "rate limit exceeded"} in messages
        assert len(messages) < 10
        await session.close()

    run(body, rate_per_s=0.1, burst=4, max_errors=100)


def test_join_timeout_closes_idle_connection() -> None:
    """Also one that pings (aiohttp's receive timeout started again at each ping, so a
    client that never joined but pinged kept its connection for ever)."""
    async def body(url: str, server: SignalingServer) -> None:
        session, ws = await raw_ws(url)
        frame = await ws.receive(timeout=5)
        assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await session.close()
        async with aiohttp.ClientSession() as pinging:
            ws = await pinging.ws_connect(url, heartbeat=0.05)
            start = time.monotonic()
            frame = await ws.receive(timeout=5)
            assert frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert time.monotonic() - start < 2

    run(body, join_timeout_s=0.3)


def test_signaling_over_tls(tmp_path: Path) -> None:
    """wss://: peers that trust the server's certificate pair as over ws://; a peer that
    does not, or that speaks plain ws:// to it, is refused in one line."""
    cert, key = self_signed(tmp_path)
    other, _ = self_signed(tmp_path, "127.0.0.2")  # another server's certificate

    async def main() -> None:
        server = SignalingServer()
        url = await server.start(tls=server_tls(cert, key))
        assert url.startswith("wss://127.0.0.1:")
        try:
            a = await SignalingClient.connect(url, ca=cert)
            b = await SignalingClient.connect(url, ca=cert)
            assert await a.join("tls") == 1 and await b.join("tls") == 2
            assert await a.receive(5) == {"type": "ready", "initiator": True}
            assert await b.receive(5) == {"type": "ready", "initiator": False}
            await a.send({"type": "offer", "sdp": OFFER})
            assert await b.receive(5) == {"type": "offer", "sdp": OFFER}
            for client in (a, b):
                await client.close()
            for ca in (None, other):  # the system's authorities, or the wrong one
                with pytest.raises(FacecodecError, match="certificate verify failed"):
                    await SignalingClient.connect(url, ca=ca)
            with pytest.raises(FacecodecError, match="cannot reach signaling server"):
                await SignalingClient.connect(url.replace("wss://", "ws://"), timeout=3)
            with pytest.raises(FacecodecError, match="not a ws:// or wss:// URL"):
                await SignalingClient.connect(url.replace("wss://", "https://"))
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    with pytest.raises(FacecodecError, match="cannot use TLS certificate"):
        server_tls(cert, tmp_path / "missing.key")
    with pytest.raises(FacecodecError, match="cannot use TLS certificate"):
        server_tls(key, cert)  # the two swapped


def test_sigterm_stops_the_server_as_ctrl_c_does() -> None:
    """`facecodec signal` stopped by SIGTERM (a service manager, `docker stop`) closes its
    peers' connections and exits 0 with nothing on stderr, as after Ctrl-C."""
    import signal
    import subprocess
    import sys

    async def body() -> None:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "facecodec.cli", "signal", "--port", "0",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert server.stdout is not None
            line = (await asyncio.wait_for(server.stdout.readline(), 30)).decode()
            assert line.startswith("signaling server on ws://"), line
            client = await SignalingClient.connect(line.split()[3])
            assert await client.join("stopping") == 1
            server.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(server.communicate(), 15)
            assert server.returncode == 0 and err == b"", err
            assert (await client.receive(5))["type"] == "closed"
            await client.close()
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()

    asyncio.run(body())


async def _fake_server(script: Callable[[web.WebSocketResponse], Awaitable[None]]
                       ) -> tuple[web.AppRunner, str]:
    """A signaling server that answers a join with `script` (a broken or hostile one)."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=0.2)  # pings well within each wait below
        await ws.prepare(request)
        await ws.receive()  # the join
        await script(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"ws://127.0.0.1:{port}/"


async def _joined_then(ws: web.WebSocketResponse, *then: Any) -> None:
    await ws.send_json({"type": "joined", "room": "r", "peers": 1})
    for step in then:
        if isinstance(step, bytes):
            await ws.send_bytes(step)
        elif isinstance(step, dict):
            await ws.send_json(step)
    async for _ in ws:  # then silence (pinged) until the client leaves
        pass


@pytest.mark.parametrize(("script", "message"), [
    (lambda ws: ws.send_json({"type": "joined", "room": "r"}), "malformed message"),
    (lambda ws: ws.send_json({"type": "joined", "room": "r", "peers": "abc"}),
     "malformed message"),
    (lambda ws: ws.send_json({"type": "joined", "room": "r", "peers": [1]}),
     "malformed message"),
    (lambda ws: ws.send_bytes(b"\x00"), "malformed message"),
    (lambda ws: ws.close(), "the signaling server closed the connection"),
    (lambda ws: _joined_then(ws, {"type": "ready"}), "malformed message"),
    (lambda ws: _joined_then(ws, {"type": "ready", "initiator": 1}), "malformed message"),
    (lambda ws: _joined_then(ws, b"\x00"), "malformed message"),
    (lambda ws: _joined_then(ws), None),  # nobody comes: pings do not make the wait endless
], ids=["no-peers", "peers-text", "peers-list", "binary", "closed", "no-initiator",
        "initiator-int", "binary-later", "silence"])
def test_a_call_refuses_a_broken_signaling_server_in_one_line_and_in_time(
        script: Callable[[web.WebSocketResponse], Awaitable[None]], message: str | None) -> None:
    """A server's malformed answers were internal errors (KeyError, TypeError), a server
    that closed was "no peer joined within 60 s" at once, and a wait for a peer never
    ended: aiohttp's receive timeout starts again at each ping (the server's every 20 s)."""
    from facecodec.stream.call import _wait_ready

    async def main() -> None:
        runner, url = await _fake_server(script)
        client = await SignalingClient.connect(url)
        start = time.monotonic()
        try:
            if message is None:
                await client.join("r")
                assert await _wait_ready(client, 1.0) is None
                assert time.monotonic() - start < 3
                with pytest.raises(FacecodecError, match="did not answer in time"):
                    await client.receive(timeout=0.8)
            else:
                with pytest.raises(FacecodecError, match=message):
                    await client.join("r")
                    await _wait_ready(client, 5.0)
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_server_that_never_answers_the_handshake_is_refused_in_time() -> None:
    """A port that accepts the connection and says nothing (not a signaling server, or one
    hung) kept a call waiting 5 minutes, aiohttp's limit on the handshake, then said
    nothing of why."""

    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 20)  # the request is read and never answered
            await asyncio.sleep(30)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        start = time.monotonic()
        try:
            with pytest.raises(FacecodecError, match=(
                    f"signaling server ws://127.0.0.1:{port}/ did not answer in 0.5 s")):
                await SignalingClient.connect(f"ws://127.0.0.1:{port}/", timeout=0.5)
            assert time.monotonic() - start < 3
            with pytest.raises(FacecodecError, match="ws://127.0.0.1:99999/ is not a valid "
                                                     "signaling server address"):
                await SignalingClient.connect("ws://127.0.0.1:99999/")
        finally:
            server.close()

    asyncio.run(asyncio.wait_for(main(), 20))
