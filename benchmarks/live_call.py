"""A live call from a clip: one process per peer, so CPU use is measured per peer.

    python benchmarks/live_call.py --source ../shared/data/clips/liveportrait_d19.mp4 \
        --seconds 10 --json out/live_call.json [--loss 0.05] [--jitter-ms 20]

The sender paces the clip in real time (looping it if shorter than --seconds); the receiver
decodes and renders without a viewer. Latency is capture (the frame's slot on the sender's
clock) to rendered frame, both peers on one machine and one clock.

By default both peers talk over loopback and the loss/jitter is applied in the receiving
application (facecodec.stream.impair). With --netns (root or CAP_NET_ADMIN) the call crosses
real kernel networking instead: sender and signaling server in one network namespace, the
receiver in another, joined through a third that routes between them via two TUN devices and a
small relay process dropping and delaying IP packets (every packet, both directions: ICE,
DTLS, SCTP, audio and the signaling TCP). It does what `tc qdisc ... netem delay D J loss P`
does, for kernels built without sch_netem.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import functools
import heapq
import json
import math
import multiprocessing
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facecodec.bench.choice import check_outputs
from facecodec.capture.feed import LiveFeed
from facecodec.capture.video import probe, read_frames
from facecodec.cli import run_guarded
from facecodec.errors import FacecodecError, OneLineParser
from facecodec.files import path_arg, write_text
from facecodec.render.registry import CALL_RENDERER
from facecodec.stream.browser import devtools, find_chromium, headless_chromium
from facecodec.stream.call import CallOptions, run_call
from facecodec.stream.impair import Impairment
from facecodec.stream.peer import AUDIO_FRAME_MS, AUDIO_KBPS, PeerOptions
from facecodec.stream.signaling import SignalingServer


def _peer(
    role: str, url: str, source: str | None, seconds: float, loss: float, jitter_ms: float,
    layer_kbps: float = 0.0, renderer: str = CALL_RENDERER, hurry_s: float | None = 0.04,
    camera: bool = False, audio_kbps: float = AUDIO_KBPS, audio_frame_ms: int = AUDIO_FRAME_MS,
    packet_frames: int = 1, follow_link: bool = True, avatar: Path | None = None,
) -> dict[str, Any]:
    """One side of the call, run in its own process (`renderer`, `hurry_s`: the receiver's;
    `avatar`: the portrait the sender appears as).
    `camera`: the sender plays `source` into a named pipe in real time and sends it as a
    webcam (`facecodec call --camera`), newest picture first, instead of pacing the file."""
    impairment = Impairment(loss=loss, jitter_ms=jitter_ms, seed=0) if loss or jitter_ms else None
    device = None
    if camera and source is not None:
        clip = list(read_frames(source))
        fps = float(probe(source).fps)
        frames = clip * math.ceil((seconds + 15) * fps / len(clip))  # outlast start-up
        device = str(LiveFeed(Path(tempfile.mkdtemp()) / "camera.y4m", frames, fps).path)
        source = None
    options = CallOptions(
        camera=device,
        peer=PeerOptions(loopback=True, audio_kbps=audio_kbps, audio_frame_ms=audio_frame_ms,
                         impairment=impairment if role == "receiver" else None),
        seconds=seconds + (5.0 if role == "receiver" else 0.0),  # outlive the sender
        loop_source=True,
        wait_peer_s=30.0,
        layer_kbps=layer_kbps,
        renderer=renderer,
        hurry_s=hurry_s,
        packet_frames=packet_frames,
        follow_link=follow_link,
        avatar=avatar,
    )
    stats = asyncio.run(run_call("bench", url, source, "none", options))
    summary = stats.summary()
    summary["role"] = role
    return summary


async def _loopback_call(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    server = SignalingServer()
    url = await server.start()
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(2, mp_context=ctx) as pool:
            audio = {"audio_kbps": args.audio_kbps, "audio_frame_ms": args.audio_frame_ms}
            receiver = loop.run_in_executor(pool, functools.partial(
                _peer, "receiver", url, None, args.seconds, args.loss, args.jitter_ms,
                renderer=args.renderer,
                hurry_s=args.hurry_ms / 1000 if args.hurry_ms > 0 else None, **audio))
            sender = loop.run_in_executor(pool, functools.partial(
                _peer, "sender", url, args.source, args.seconds, 0.0, 0.0,
                layer_kbps=args.layer_kbps, camera=args.camera,
                packet_frames=args.packet_frames,
                follow_link=args.follow_link, avatar=args.avatar, **audio))
            sent, received = await asyncio.gather(sender, receiver)
    finally:
        await server.stop()
    return sent, received


# --- real networking: namespaces and an impairing relay ----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
CMD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NetnsRig:
    """Namespaces a (10.213.77.1), b (10.213.77.6) and the relay m between them."""

    a: str
    b: str
    m: str
    addr_a: str = "10.213.77.1"
    addr_b: str = "10.213.77.6"
    relay_pid: int = 0
    loss_on_signal: bool = False  # the relay drops nothing until start_loss()
    # What the relay counted, filled in when the rig is taken down (relay_main's counts).
    wire: dict[str, Any] = dataclasses.field(default_factory=dict)

    def start_loss(self) -> None:
        """Switch the relay's packet loss on (delay and jitter apply from the start)."""
        os.kill(self.relay_pid, signal.SIGUSR1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise FacecodecError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def netns_unavailable() -> str | None:
    """Why --netns cannot work here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (no TUN support)"
    probe_ns = f"fc-{os.getpid()}-probe"
    result = _ip("netns", "add", probe_ns, check=False)
    if result.returncode != 0:
        return f"`ip netns add` failed (needs root/CAP_NET_ADMIN): {result.stderr.strip()}"
    _ip("netns", "del", probe_ns, check=False)
    return None


@contextlib.contextmanager
def netns_rig(
    loss: float, delay_ms: float, jitter_ms: float, seed: int = 0, loss_on_signal: bool = False,
    rate_kbps: float = 0.0, buffer_ms: float = 200.0,
) -> Iterator[NetnsRig]:
    """Three fresh namespaces wired a <-> m <-> b, the relay running in m; all removed after.

    rate_kbps (0: none): each direction is a bottleneck of that rate, counting IP packets
    whole, with a drop-tail buffer of buffer_ms, as an uplink's router has.

    loss_on_signal: start without loss until `rig.start_loss()` (netns_call does that once both
    peers are connected), so that the measured call is not eaten by a slow setup.

    Only addresses inside 10.213.77.0/29 in these namespaces are used; the links are created
    inside them, so the host's network namespace never sees them.
    """
    tag = f"fc-{os.getpid()}"
    rig = NetnsRig(f"{tag}-a", f"{tag}-b", f"{tag}-m", loss_on_signal=loss_on_signal)
    made: list[str] = []
    relay: subprocess.Popen[bytes] | None = None
    try:
        for ns in (rig.a, rig.b, rig.m):
            _ip("netns", "add", ns)
            made.append(ns)
        m = rig.m
        _ip(
            "-n",
            m,
            "link",
            "add",
            "name",
            "fcma",
            "type",
            "veth",
            "peer",
            "name",
            "fca0",
            "netns",
            rig.a,
        )
        _ip(
            "-n",
            m,
            "link",
            "add",
            "name",
            "fcmb",
            "type",
            "veth",
            "peer",
            "name",
            "fcb0",
            "netns",
            rig.b,
        )
        for ns, dev, addr, gw in (
            (rig.a, "fca0", f"{rig.addr_a}/30", "10.213.77.2"),
            (rig.b, "fcb0", f"{rig.addr_b}/30", "10.213.77.5"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", gw)
        _ip("-n", m, "addr", "add", "10.213.77.2/30", "dev", "fcma")
        _ip("-n", m, "addr", "add", "10.213.77.5/30", "dev", "fcmb")
        for dev in ("fcma", "fcmb", "lo"):
            _ip("-n", m, "link", "set", dev, "up")
        for tun in ("fcta", "fctb"):
            _ip("-n", m, "tuntap", "add", "dev", tun, "mode", "tun")
            _ip("-n", m, "link", "set", tun, "up")
        # Whatever arrives from a goes to TUN fcta, from b to TUN fctb; the relay reads each and
        # writes it (maybe later, maybe never) into the other TUN, whence m forwards it on.
        _ip("-n", m, "rule", "add", "iif", "fcma", "lookup", "100")
        _ip("-n", m, "route", "add", "default", "dev", "fcta", "table", "100")
        _ip("-n", m, "rule", "add", "iif", "fcmb", "lookup", "101")
        _ip("-n", m, "route", "add", "default", "dev", "fctb", "table", "101")
        sysctls = ["net.ipv4.ip_forward=1"] + [
            f"net.ipv4.conf.{dev}.rp_filter=0" for dev in ("all", "default", "fcta", "fctb")
        ]
        for setting in sysctls:
            result = subprocess.run(
                ["ip", "netns", "exec", m, "sysctl", "-qw", setting],
                capture_output=True,
                text=True,
                timeout=CMD_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                raise FacecodecError(f"sysctl {setting} in {m}: {result.stderr.strip()}")
        relay = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                m,
                sys.executable,
                str(Path(__file__).resolve()),
                "--relay",
                "--loss",
                str(loss),
                "--delay-ms",
                str(delay_ms),
                "--jitter-ms",
                str(jitter_ms),
                "--seed",
                str(seed),
                "--rate-kbps",
                str(rate_kbps),
                "--buffer-ms",
                str(buffer_ms),
                *(["--loss-on-signal"] if loss_on_signal else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert relay.stdout is not None
        ready, _, _ = select.select([relay.stdout], [], [], 20.0)
        if not ready or not relay.stdout.readline().startswith(b"relay ready"):
            raise FacecodecError("the impairing relay did not start")
        rig = dataclasses.replace(rig, relay_pid=relay.pid)
        yield rig
    finally:
        if relay is not None:
            _stop(relay)
            assert relay.stderr is not None
            for line in relay.stderr.read().decode(errors="replace").splitlines():
                if line.startswith('{"relay"'):
                    rig.wire.update(json.loads(line)["relay"])
        for ns in made:
            _ip("netns", "del", ns, check=False)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def packet_kind(packet: bytes) -> str:
    """What an IPv4 packet carries, told apart by its UDP payload's first bytes (RFC 7983):
    stun (ICE checks, TURN), dtls (the data channels' SCTP, and the handshake), rtp (sound)
    or rtcp (its reports); other for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != 17:
        return "other"
    start = (packet[0] & 0x0F) * 4 + 8
    if len(packet) < start + 2:
        return "other"
    first, second = packet[start], packet[start + 1]
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    if 128 <= first <= 191:
        return "rtcp" if 192 <= second <= 223 else "rtp"
    return "other"


def relay_main(
    loss: float, delay_ms: float, jitter_ms: float, seed: int, loss_on_signal: bool = False,
    rate_kbps: float = 0.0, buffer_ms: float = 200.0,
) -> int:
    """Move IP packets between TUNs fcta and fctb, dropping a share `loss` and delaying each by
    delay_ms +- jitter_ms (uniform; packets may reorder, as with netem). With rate_kbps each
    direction first passes a bottleneck of that rate whose queue holds at most buffer_ms of
    it; a packet that finds it full is dropped (drop-tail), as at a slow uplink's router.
    Runs until SIGTERM; with loss_on_signal, drops nothing until SIGUSR1."""
    rng = random.Random(seed)
    fds = {}
    for name in ("fcta", "fctb"):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
        fds[name] = fd
    other = {fds["fcta"]: fds["fctb"], fds["fctb"]: fds["fcta"]}
    queue: list[tuple[float, int, int, bytes]] = []  # (due, order, out fd, packet)
    order = 0
    counts = {"in": 0, "bytes_from_a": 0, "bytes_from_b": 0, "dropped": 0, "dropped_queue": 0}
    side = {fds["fcta"]: "bytes_from_a", fds["fctb"]: "bytes_from_b"}
    kinds: dict[str, tuple[int, int]] = {}
    free_at = {fd: 0.0 for fd in other}  # when each direction's bottleneck is next free
    # Each second from the first packet, per side: bytes offered and packets the full
    # bottleneck dropped (how a call's rate follows the link over time).
    seconds: dict[str, list[int]] = {f"{k}_{s}": [] for k in ("bytes", "dropped")
                                      for s in ("from_a", "from_b")}
    first_at: float | None = None

    def per_second(key: str, amount: int, now: float) -> None:
        series = seconds[key]
        at = int(now - (first_at or now))
        series.extend([0] * (at + 1 - len(series)))
        series[at] += amount
    stop = False
    active_loss = 0.0 if loss_on_signal else loss

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    def on_usr1(signum: int, frame: object) -> None:
        nonlocal active_loss
        active_loss = loss

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_usr1)
    print("relay ready", flush=True)
    while not stop:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 0.5
        try:
            readable, _, _ = select.select(list(other), [], [], timeout)
        except InterruptedError:
            continue
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                counts["in"] += 1
                counts[side[fd]] += len(packet)
                first_at = first_at or time.monotonic()
                per_second(side[fd], len(packet), time.monotonic())
                # Per side and kind: packets and bytes, IP headers included.
                kind = f"{side[fd].removeprefix('bytes_')}_{packet_kind(packet)}"
                packets, size = kinds.get(kind, (0, 0))
                kinds[kind] = (packets + 1, size + len(packet))
                if rng.random() < active_loss:
                    counts["dropped"] += 1
                    continue
                delay = max(0.0, delay_ms + rng.uniform(-jitter_ms, jitter_ms)) / 1000
                sent_at = time.monotonic()
                if rate_kbps > 0:
                    out = other[fd]
                    start = max(sent_at, free_at[out])
                    if start - sent_at > buffer_ms / 1000:
                        counts["dropped_queue"] += 1
                        per_second(f"dropped_{side[fd].removeprefix('bytes_')}", 1, sent_at)
                        continue
                    free_at[out] = sent_at = start + len(packet) * 8 / (rate_kbps * 1000)
                heapq.heappush(queue, (sent_at + delay, order, other[fd], packet))
                order += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, packet = heapq.heappop(queue)
            with contextlib.suppress(OSError):
                os.write(out, packet)
    per_kind = {k: {"packets": n, "bytes": b} for k, (n, b) in sorted(kinds.items())}
    wire = {**counts, "kinds": per_kind, "per_second": seconds}
    print(json.dumps({"relay": wire}), file=sys.stderr, flush=True)
    return 0


def _spawn(ns: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "facecodec.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def netns_call(
    rig: NetnsRig,
    source: Path,
    seconds: float,
    workdir: Path,
    timeout: float = 60.0,
    audio: str = "auto",
    layer_kbps: float = 0.0,
    renderer: str = CALL_RENDERER,
    hurry_ms: float = 40.0,
    audio_args: tuple[str, ...] = (),
    packet_frames: int = 1,
    follow_link: bool = True,
    reverse: Path | None = None,
    avatar: Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`audio_args`: `facecodec call`'s Opus options, for both peers.

    Signaling server and sender (`facecodec call --source ... --loop`) in namespace a, the
    receiver in b (`renderer`, `hurry_ms`: its options), both `--render none --stats-json`;
    returns (sender, receiver) summaries."""
    url = f"ws://{rig.addr_a}:8765/"
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: workdir / f"{name}.log" for name in ("signal", "send", "recv")}
    try:
        server = _spawn(rig.a, ["signal", "--host", rig.addr_a, "--port", "8765"], logs["signal"])
        procs.append(server)
        deadline = time.monotonic() + 20
        while "signaling server on" not in logs["signal"].read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise FacecodecError(f"signaling server: {logs['signal'].read_text()}")
            time.sleep(0.1)
        common = ["call", "netns", "--signal", url, "--render", "none", "--audio", audio,
                  *audio_args]
        sending = ["--layer-kbps", str(layer_kbps), "--packet-frames", str(packet_frames),
                   "--follow-link" if follow_link else "--no-follow-link",
                   *(["--avatar", str(avatar)] if avatar is not None else [])]
        # A two-way call: b sends `reverse` too, with the same settings (it hangs up when a
        # does).
        back = [] if reverse is None else ["--source", str(reverse), "--loop", *sending]
        receiver = _spawn(
            rig.b,
            [*common, "--seconds", str(seconds + 30), "--stats-json", str(workdir / "recv.json"),
             "--renderer", renderer, "--hurry-ms", str(hurry_ms), *back],
            logs["recv"],
        )
        sender = _spawn(
            rig.a,
            [
                *common,
                "--source",
                str(source),
                "--loop",
                "--seconds",
                str(seconds),
                "--stats-json",
                str(workdir / "send.json"),
                *sending,
            ],
            logs["send"],
        )
        procs += [receiver, sender]
        deadline = time.monotonic() + timeout
        if rig.loss_on_signal:
            # Both sides print "connected" once their data channels are open.
            while not all(
                "connected" in logs[n].read_text(errors="replace") for n in ("send", "recv")
            ):
                if sender.poll() is not None or receiver.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise FacecodecError("the peers did not connect")
                time.sleep(0.05)
            rig.start_loss()
        for proc, name in ((sender, "send"), (receiver, "recv")):
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise FacecodecError(f"{name} still running after {timeout:.0f} s") from None
            if rc != 0:
                raise FacecodecError(f"{name} exited {rc}: {logs[name].read_text()}")
        sent = json.loads((workdir / "send.json").read_text())
        received = json.loads((workdir / "recv.json").read_text())
        return sent, received
    finally:
        for proc in procs:
            _stop(proc)


async def _netns_call(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    reason = netns_unavailable()
    if reason is not None:
        raise FacecodecError(f"--netns: {reason}")

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        with (
            netns_rig(args.loss, args.delay_ms, args.jitter_ms,
                      rate_kbps=args.rate_kbps, buffer_ms=args.buffer_ms) as rig,
            tempfile.TemporaryDirectory() as tmp,
        ):
            sent, received = netns_call(
                rig, args.source, args.seconds, Path(tmp), args.seconds + 60,
                layer_kbps=args.layer_kbps, renderer=args.renderer, hurry_ms=args.hurry_ms,
                packet_frames=args.packet_frames, follow_link=args.follow_link,
                reverse=args.reverse, avatar=args.avatar,
                audio_args=("--audio-kbps", str(args.audio_kbps),
                            "--audio-frame-ms", str(args.audio_frame_ms)))
        # The relay's counts are known once the rig is down.
        sent["wire"] = rig.wire
        return sent, received

    return await asyncio.to_thread(run)


# --- a screenshot of the receiver's browser viewer ------------------------------------------------


async def screenshot_call(source: Path, png: Path, frames: int = 50, timeout: float = 90.0) -> int:
    """Loopback call whose receiver renders to its browser viewer; headless Chromium (driven over
    the DevTools protocol) opens the page, and once the page reports `frames` frames shown, the
    page is captured as PNG. Returns how many frames the browser had shown."""
    import aiohttp

    if find_chromium() is None:
        raise FacecodecError("chromium is not installed")
    server = SignalingServer()
    url = await server.start()
    loop = asyncio.get_running_loop()
    viewer_url: asyncio.Future[str] = loop.create_future()
    options = CallOptions(
        seconds=timeout,
        peer=PeerOptions(loopback=True),
        wait_peer_s=30.0,
        on_viewer=lambda u: viewer_url.set_result(u),
    )
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        sender = loop.run_in_executor(pool, _peer, "sender", url, str(source), timeout, 0.0, 0.0)
        receiver = asyncio.ensure_future(run_call("bench", url, None, "local", options))
        try:
            page = await asyncio.wait_for(viewer_url, 60)
            with headless_chromium(
                page, "--remote-debugging-port=0", "--window-size=720,900"
            ) as (browser, profile):
                async with aiohttp.ClientSession() as http:
                    deadline = time.monotonic() + timeout
                    status: dict[str, Any] = {}
                    while (shown := status.get("browser_frames_shown", 0)) < frames:
                        if time.monotonic() > deadline or browser.poll() is not None:
                            raise FacecodecError(
                                f"the browser showed only {shown} frames (chromium exit code "
                                f"{browser.poll()}, viewer status {status})"
                            )
                        await asyncio.sleep(0.5)
                        async with http.get(page + "status") as r:
                            status = await r.json()
                shot = await devtools(profile, "Page.captureScreenshot")
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(base64.b64decode(shot["data"]))
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
            sender.cancel()
            await server.stop()  # the sender hangs up when its peer is gone
    return shown


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    sent, received = await (_netns_call(args) if args.netns else _loopback_call(args))
    return {
        "source": str(args.source),
        "seconds": args.seconds,
        "network": "netns" if args.netns else "loopback",
        "loss": args.loss,
        "delay_ms": args.delay_ms if args.netns else 0.0,
        "rate_kbps": args.rate_kbps if args.netns else 0.0,
        "jitter_ms": args.jitter_ms,
        "audio_kbps_asked": args.audio_kbps,
        "audio_frame_ms": args.audio_frame_ms,
        "packet_frames": args.packet_frames,
        "follow_link": args.follow_link,
        "renderer": args.renderer,
        "hurry_ms": args.hurry_ms,
        "frames_sent": sent["frames_sent"],
        "frames_skipped": sent["frames_skipped"],
        "frames_rendered": received["frames_rendered"],
        "frames_concealed": received["frames_concealed"],
        "frames_unsent": received["frames_unsent"],
        "frames_late": received["frames_late"],
        "frames_hurried": received["frames_hurried"],
        "keyframe_requests": received["keyframe_requests_sent"],
        "resync_requests": received["resync_requests_sent"],
        "loss_reports": received["loss_reports_sent"],
        "intra_only_reports": sent["resilient_reports"],
        "congested_reports": sent["congested_reports"],
        "layer_limited_reports": sent["layer_limited_reports"],
        "layer_paused_reports": sent["layer_paused_reports"],
        "sound_thin_reports": sent["sound_thin_reports"],
        "paced_reports": sent["paced_reports"],
        "link_kbps": received["link_kbps"],
        "frames_fused": received["frames_fused"],
        "fps": received["fps"],
        "motion_kbps": sent["motion_kbps"],
        "keyframe_kbps": sent["keyframe_kbps"],
        "layer_kbps": sent["layer_kbps"],
        "audio_kbps": sent["audio_kbps"],
        "latency_p50_ms": received["latency_p50_ms"],
        "latency_p95_ms": received["latency_p95_ms"],
        "max_render_gap_ms": received.get("max_render_gap_ms"),
        "packets_lost": received["packets_lost"],
        "cpu_percent": {"sender": sent["cpu_percent"], "receiver": received["cpu_percent"]},
        # What the relay saw (--netns): a is the sender, b the receiver.
        "wire": sent.pop("wire", None),
        # --reverse: b's clip to a, as a draws it.
        "reverse": None if args.reverse is None else {
            "source": str(args.reverse),
            "frames_sent": received["frames_sent"],
            "frames_rendered": sent["frames_rendered"],
            "frames_fused": sent["frames_fused"],
            "layer_kbps": received["layer_kbps"],
            "audio_kbps": received["audio_kbps"],
            "latency_p50_ms": sent["latency_p50_ms"],
            "latency_p95_ms": sent["latency_p95_ms"],
            "layer_paused_reports": received["layer_paused_reports"],
            "sound_thin_reports": received["sound_thin_reports"],
            "link_kbps": sent["link_kbps"],
        },
        "peers": {"sender": sent, "receiver": received},
    }


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=path_arg, help="video clip to send")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=path_arg, help="where to write the results")
    parser.add_argument(
        "--loss", type=float, default=0.0, help="packet loss probability (loopback: motion only)"
    )
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--layer-kbps", type=float, default=0.0,
                        help="also send the low-resolution layer at this rate")
    parser.add_argument("--renderer", default=CALL_RENDERER,
                        help=f"the receiver's renderer (default {CALL_RENDERER}, as a call's)")
    parser.add_argument("--hurry-ms", type=float, default=40.0,
                        help="the receiver's `facecodec call --hurry-ms` (0: never)")
    parser.add_argument("--audio-kbps", type=float, default=AUDIO_KBPS,
                        help="both peers' Opus rate (facecodec call --audio-kbps)")
    parser.add_argument("--audio-frame-ms", type=int, default=AUDIO_FRAME_MS,
                        help="both peers' Opus frame length (facecodec call --audio-frame-ms)")
    parser.add_argument("--camera", action="store_true",
                        help="send the clip as a webcam (played live into a named pipe)")
    parser.add_argument("--reverse", type=path_arg, metavar="CLIP",
                        help="a two-way call (--netns): the receiving side sends this clip")
    parser.add_argument("--follow-link", action=argparse.BooleanOptionalAction,
                        default=True, help="the sender's `facecodec call --follow-link`")
    parser.add_argument("--packet-frames", type=int, default=1,
                        help="frames a motion packet carries (facecodec call --packet-frames)")
    parser.add_argument("--avatar", type=path_arg, metavar="PORTRAIT",
                        help="the sender appears as this portrait (`facecodec call --avatar`)")
    parser.add_argument("--netns", action="store_true", help="call across network namespaces")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay (--netns)")
    parser.add_argument("--rate-kbps", type=float, default=0.0,
                        help="a bottleneck of this rate each way, IP packets whole (--netns)")
    parser.add_argument("--buffer-ms", type=float, default=200.0,
                        help="the bottleneck's drop-tail buffer (--netns --rate-kbps)")
    parser.add_argument(
        "--screenshot", type=path_arg, help="instead: PNG of the receiver's viewer page in Chromium"
    )
    parser.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--loss-on-signal", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.relay:
        return relay_main(args.loss, args.delay_ms, args.jitter_ms, args.seed, args.loss_on_signal,
                          args.rate_kbps, args.buffer_ms)
    if args.screenshot is not None:
        if args.source is None:
            parser.error("--screenshot needs --source")
        shown = asyncio.run(screenshot_call(args.source, args.screenshot))
        print(f"{args.screenshot}: viewer page after {shown} frames shown in the browser")
        return 0
    if args.source is None or args.json is None:
        parser.error("--source and --json are required")
    if args.reverse is not None and not args.netns:
        parser.error("--reverse needs --netns")
    for clip in (args.source, args.reverse):
        if clip is not None and not clip.is_file():
            print(f"error: {clip}: no such file", file=sys.stderr)
            return 2
    check_outputs(args.json)
    try:
        result = asyncio.run(_bench(args))
    except FacecodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    write_text(args.json, json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "peers"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main))
