"""A live call: capture (a webcam, or a file paced in real time) -> StreamEncoder -> WebRTC
-> StreamDecoder -> viewer, with loss concealment, keyframe requests, reconnects and
measurements.

Each side of a call runs `run_call`. A side with a `source` sends; every side receives whatever
the other sends. Frame timing: frame i of a session counts as captured at t0 + i / fps (a file
is paced to exactly that clock; a camera's picture takes the slot of the time it arrived),
and the sender tells the receiver t0, so latency is
render time minus capture time: it includes encoding, transport, decoding and rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from facecodec.bitstream.container import AVATAR_WORDS
from facecodec.bitstream.packets import LAYER_TYPES, is_intact
from facecodec.capture.camera import STALL_TIMEOUT_S, Camera
from facecodec.capture.microphone import open_microphone
from facecodec.capture.sound import has_sound
from facecodec.capture.video import probe, read_frames
from facecodec.codec.encoder_watch import stall_limit
from facecodec.codec.layer_rate import LIVE_LAYER_MOTION_PRESET, check_layer_kbps
from facecodec.codec.stream import MAX_CALL_PACKET_FRAMES, check_packet_frames
from facecodec.errors import BitstreamError, FacecodecError, Terminated
from facecodec.files import check_writable, path_arg, same_file, write_text
from facecodec.motion.presets import PRESETS
from facecodec.render.edits import EyeContact
from facecodec.render.pose import PoseEdit, add_pose_arguments, pose_of
from facecodec.render.registry import CALL_RENDERER
from facecodec.stream.congestion import LinkRate, QueueDelay, SoundRate
from facecodec.stream.impair import MAX_JITTER_MS, Impairment
from facecodec.stream.peer import (
    AUDIO_FRAME_CHOICES,
    AUDIO_FRAME_MS,
    AUDIO_KBPS,
    ControlReceived,
    IceServer,
    PacketReceived,
    Peer,
    PeerClosed,
    PeerOptions,
    set_thin_sound,
    sound_sent_within,
)
from facecodec.stream.shutdown import until_sigterm
from facecodec.stream.signaling import (
    ROOM_PATTERN,
    SignalingClient,
    add_signal_arguments,
    check_port,
    check_url,
    client_tls,
    signal_main,
)
from facecodec.stream.viewer import Viewer, square_pixels, try_open_window
from facecodec.stream.wire import (
    keyframe_request,
    loss_report,
    resync_request,
    seq_ahead,
    start_message,
)
from facecodec.words import count

__all__ = [
    "CallOptions",
    "CallStats",
    "add_call_arguments",
    "add_signal_arguments",
    "call_main",
    "run_call",
    "signal_main",
]

RENDER_MODES = ("local", "cloud", "none")
AUDIO_WORDS = ("auto", "silence", "none")  # what --audio takes besides a file
# The viewer's small picture of the face this side sends: a few pictures a second are enough
# to frame oneself, and each costs a crop and a JPEG on the call's event loop (about 1 ms).
SELF_VIEW_EVERY = 3
# The receiver reports at once when its estimate of the link's rate falls under this share
# of the one it reported last (an overuse: the link's queue is growing now).
RATE_DROP_REPORT = 0.9
# This side is speaking, for SoundRate, while it sent sound in the last this many seconds.
SPEAKING_S = 2.0
TURN_PASSWORD_ENV = "FACECODEC_TURN_PASSWORD"  # kept off the command line, which ps shows


@dataclass
class CallOptions:
    seconds: float | None = None  # stop after this long (None: when the source ends / peer leaves)
    loop_source: bool = False  # restart the file when it ends (long benchmarks from short clips)
    camera: str | None = None  # send this capture device ("0", "/dev/video2") instead of a file
    # auto (the source's sound, else silence) | silence | none | a file; a microphone
    # (peer.microphone) is sent instead
    audio: str = "auto"
    # The connection: loopback candidates, ICE servers, the microphone, Opus's settings, an
    # impairment. Its `audio` and `send_audio` are set each session from `audio` above.
    peer: PeerOptions = field(default_factory=PeerOptions)
    signal_ca: Path | None = None  # the authority of a wss:// signaling server (None: system's)
    reconnect: bool = False  # after the other peer leaves, wait for the next one
    wait_peer_s: float = 60.0  # how long to wait for a peer to (re)join
    viewer_host: str = "127.0.0.1"
    viewer_port: int = 0
    window: bool = False  # also try a desktop window (needs an OpenCV build with a GUI)
    size: int = 256
    preset: str | None = None  # motion preset; None: medium, or low beside a layer
    renderer: str = CALL_RENDERER
    eye_contact: EyeContact | None = None  # draw the peer's eyes turned up into the camera
    pose: PoseEdit | None = None  # draw the peer's head turned (frontal, or by angles)
    layer_kbps: float = 0.0  # low-resolution layer beside the motion (0: motion only)
    # The layer keeps within the link's rate as the receiver estimates it, the sound goes
    # thin on a link that stays full, and a layer call's packets are paced while the link
    # is full (False: the layer and the sound keep their rates whatever the link, unpaced).
    follow_link: bool = True
    reference: str = "best"  # motion only: refresh the reference as the call goes (codec/scout.py)
    avatar: Path | None = None  # appear as this portrait (StreamEncoder): the face is not sent
    # Frames a motion packet carries: 2 halves the packets (and their headers, which cost
    # more than the motion), each frame a frame's time later.
    packet_frames: int = 1
    # A packet that waited longer than this in the receiver's queue is decoded but not drawn:
    # a renderer slower than the frame rate then shows fewer frames, not ever later ones.
    # None: draw every frame however late.
    late_s: float | None = 0.1
    # A packet that waited longer than this is drawn the cheapest way there is (the neural
    # renderer's warp, the layer's training-free fusion), so that a receiver slower than the
    # frame rate catches up by drawing plainer frames before it has to leave any out.
    # None: never.
    hurry_s: float | None = 0.04
    # Torch threads of the receiver's networks: the call's machine runs both sides and the
    # audio. With 2 a neural receiver on 2 cores missed 18 frames in 20 s at 96 % of a
    # core; with 1, 7 at 66 %.
    torch_threads: int = 1
    pli_interval_s: float = 0.5  # at most one keyframe request per interval
    # At most one RESYNC request per interval while motion is lost: the answer comes a
    # round trip and a frame later, and a request or its RESYNC may be lost too.
    resync_interval_s: float = 0.25
    loss_report_s: float = 1.0  # how often the receiver reports motion-packet loss
    on_viewer: Callable[[str], None] | None = None  # told the viewer URL once it listens
    on_frame: Callable[[int, np.ndarray], None] | None = None  # every rendered frame
    on_connected: Callable[[], None] | None = None  # each time a session's channels are open
    # When the other side starts appearing as an avatar, or stops: whether it now does.
    on_other_side: Callable[[bool], None] | None = None
    # The signaling server went away mid-call: the call goes on (its media goes from peer
    # to peer), but a peer that leaves can no longer be replaced.
    on_signaling_lost: Callable[[], None] | None = None
    # Under `reconnect`, a peer whose stream cannot be drawn (why) is left for the next one.
    on_peer_refused: Callable[[str], None] | None = None


# A call's encoder calls take a few ms (a reference picture about 20): one that has not
# returned in this long is given up on (codec/encoder_watch.py) before the picture the
# other side sees has frozen for a minute, as a file's limit would let it.
CALL_STALL_LIMIT_S = 5.0
RECENT_FRAMES = 3000  # per-frame detail CallStats keeps: two minutes at 25 fps
RECENT_REPORTS = 600  # link estimates CallStats keeps: ten minutes of reports


@dataclass
class CallStats:
    sessions: int = 0
    signaling_lost: bool = False  # the signaling server went away while a session ran
    frames_sent: int = 0
    # Of them, found without a face: the last pose held, or, before the first face, nothing
    # sent at all (a file encode refuses such a video; a call waits for a face).
    frames_without_face: int = 0
    frames_skipped: int = 0  # captured while the encoder was behind real time: not encoded
    frames_rendered: int = 0
    frames_concealed: int = 0  # frame indices whose motion was lost or could not be drawn
    # Frame indices the other side never sent (its sender was behind real time, or its
    # camera left slots empty): the last frame held as for a loss, though nothing was lost.
    frames_unsent: int = 0
    frames_late: int = 0  # decoded but not drawn: their packet came while the receiver was behind
    frames_fused: int = 0  # frames drawn with the low-resolution layer
    # Drawn the cheap way (the refiner, or the layer's fusion network, skipped): the
    # receiver was behind.
    frames_hurried: int = 0
    motion_holds: int = 0  # lost motion held the picture (codec/decoder.py, DecodeStats)
    decode_errors: int = 0
    malformed_received: int = 0  # messages from the other side dropped as malformed
    keyframe_requests_sent: int = 0
    keyframe_requests_received: int = 0
    resync_requests_sent: int = 0  # motion lost: the receiver asked for a RESYNC at once
    resync_requests_received: int = 0
    loss_reports_sent: int = 0
    resilient_reports: int = 0  # loss reports after which the sender sent intra-only motion
    congested_reports: int = 0  # reports after which it took the link for full (2 frames a packet)
    layer_limited_reports: int = 0  # reports after which the layer aimed below its asked rate
    layer_paused_reports: int = 0  # reports after which the layer was paused
    sound_thin_reports: int = 0  # reports after which the sound went thin (peer.THIN_SOUND)
    paced_reports: int = 0  # reports after which the data channels were paced (sctp.pace_data)
    # The last RECENT_REPORTS link rate estimates reported (one a second).
    link_kbps: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_REPORTS))
    packets_lost: int = 0
    motion_bytes_sent: int = 0
    keyframe_bytes_sent: int = 0
    layer_bytes_sent: int = 0
    audio_bytes_sent: int = 0
    send_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    # The last frames' latencies and render times (time.time()), for a closer look; the
    # summary counts every frame of the call in bounded memory (`rendered`): an hour-long
    # call would otherwise keep 90,000 of each.
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    render_times: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_FRAMES))
    latency_counts: Counter[int] = field(default_factory=Counter)  # whole ms -> frames
    first_render: float | None = None
    max_render_gap_s: float | None = None
    viewer_url: str | None = None
    other_side_avatar: bool = False  # the other side's last stream was an avatar's

    def rendered(self, now: float, captured: float) -> None:
        """A frame captured at `captured` was shown at `now` (both time.time())."""
        latency_ms = (now - captured) * 1000
        self.frames_rendered += 1
        self.latency_counts[round(latency_ms)] += 1
        if self.render_times:
            gap = now - self.render_times[-1]
            self.max_render_gap_s = max(self.max_render_gap_s or 0.0, gap)
        else:
            self.first_render = now
        self.latencies_ms.append(latency_ms)
        self.render_times.append(now)

    def summary(self) -> dict[str, Any]:
        """The numbers a report needs (rates over the time this side was sending/rendering)."""
        send_s = max(self.send_seconds, 1e-9)
        span = self.render_times[-1] - self.first_render if self.first_render is not None else 0
        gap = self.max_render_gap_s
        return {
            "sessions": self.sessions,
            "signaling_lost": self.signaling_lost,
            "frames_sent": self.frames_sent,
            "frames_without_face": self.frames_without_face,
            "frames_skipped": self.frames_skipped,
            "frames_rendered": self.frames_rendered,
            "frames_concealed": self.frames_concealed,
            "frames_unsent": self.frames_unsent,
            "frames_late": self.frames_late,
            "frames_fused": self.frames_fused,
            "frames_hurried": self.frames_hurried,
            "motion_holds": self.motion_holds,
            "decode_errors": self.decode_errors,
            "malformed_received": self.malformed_received,
            "keyframe_requests_sent": self.keyframe_requests_sent,
            "keyframe_requests_received": self.keyframe_requests_received,
            "resync_requests_sent": self.resync_requests_sent,
            "resync_requests_received": self.resync_requests_received,
            "loss_reports_sent": self.loss_reports_sent,
            "resilient_reports": self.resilient_reports,
            "congested_reports": self.congested_reports,
            "layer_limited_reports": self.layer_limited_reports,
            "layer_paused_reports": self.layer_paused_reports,
            "sound_thin_reports": self.sound_thin_reports,
            "paced_reports": self.paced_reports,
            "link_kbps": [round(k, 1) for k in self.link_kbps],  # each report's estimate
            "packets_lost": self.packets_lost,
            "fps": (self.frames_rendered - 1) / span if span > 0 else 0.0,
            "motion_kbps": self.motion_bytes_sent * 8 / 1000 / send_s if self.send_seconds else 0,
            "keyframe_kbps": (
                self.keyframe_bytes_sent * 8 / 1000 / send_s if self.send_seconds else 0
            ),
            "layer_kbps": self.layer_bytes_sent * 8 / 1000 / send_s if self.send_seconds else 0,
            "audio_kbps": self.audio_bytes_sent * 8 / 1000 / max(self.wall_seconds, 1e-9),
            "latency_p50_ms": _percentile(self.latency_counts, 50),
            "latency_p95_ms": _percentile(self.latency_counts, 95),
            "max_render_gap_ms": gap * 1000 if gap is not None else None,  # longest freeze
            "cpu_seconds": self.cpu_seconds,
            "cpu_percent": 100 * self.cpu_seconds / max(self.wall_seconds, 1e-9),
            "wall_seconds": self.wall_seconds,
            "other_side_avatar": self.other_side_avatar,
        }


def _percentile(counts: Counter[int], q: float) -> float | None:
    """The q-th percentile (nearest rank) of values counted to the whole unit."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = math.ceil(q / 100 * total)
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return float(value)
    raise AssertionError("unreachable: the ranks add up to the total")


def _codec() -> tuple[Any, Any]:
    try:
        from facecodec.codec.stream import StreamDecoder, StreamEncoder
    except ImportError as exc:
        raise FacecodecError(f"the streaming codec is not available: {exc}") from None
    return StreamEncoder, StreamDecoder


class _Source:
    """A video file's frames, looped if asked, read off the event loop. A loop's end is
    found as the frame `LOOK_AHEAD_S` before the next loop's first is given, so that the
    file's sound, which the peer sends on its own clock, starts again with the picture
    (`restarts`): the peer must know 20 ms (a sound frame) ahead, after the file is opened
    again (up to ~75 ms measured) and the frame given is coded."""

    LOOK_AHEAD_S = 0.25

    def __init__(self, path: str, loop: bool) -> None:
        self.path = path
        self.loop = loop
        self.info = probe(path)
        self.fps = self.info.fps
        self._frames: Iterator[np.ndarray] = read_frames(path, info=self.info)
        self._ahead: deque[np.ndarray] = deque()  # read, not yet given
        self._read = 0  # frames read so far, over all loops
        self.given = 0  # frames given so far: the next one's index
        self.restarts: list[int] = []  # frame indices at which the picture starts again

    def _fill(self, n: int) -> None:
        while len(self._ahead) < n:
            frame = next(self._frames, None)
            # At its end a looped file starts again, if it gave a frame since it last did.
            if frame is None and self.loop and self._read > (self.restarts or [0])[-1]:
                self.restarts.append(self._read)
                self._frames = read_frames(self.path, info=self.info)  # probed once
                frame = next(self._frames, None)
            if frame is None:
                return
            self._ahead.append(frame)
            self._read += 1

    def first_frame(self) -> np.ndarray | None:
        """The frame `next_frame` gives next, read now (opening the video takes a while)."""
        self._fill(1)
        return self._ahead[0] if self._ahead else None

    def next_frame(self) -> np.ndarray | None:
        self._fill(1 + (math.ceil(self.LOOK_AHEAD_S * float(self.fps)) if self.loop else 0))
        if not self._ahead:
            return None
        self.given += 1
        return self._ahead.popleft()

    def close(self) -> None:
        pass


class _Call:
    def __init__(self, source: str | None, render: str, options: CallOptions,
                 stats: CallStats) -> None:
        if render not in RENDER_MODES:
            raise FacecodecError(f"render must be one of {', '.join(RENDER_MODES)}, not {render}")
        self.render = render
        self.options = options
        self.stats = stats
        self.encoder_cls, self.decoder_cls = _codec()
        if source is not None and options.camera is not None:
            raise FacecodecError("send a file (--source) or a camera (--camera), not both")
        self.source: _Source | Camera | None = None
        if options.camera is not None:
            self.source = Camera(options.camera)
        elif source is not None:
            self.source = _Source(source, options.loop_source)
        self.encoder: Any = None
        if self.source is not None:
            try:
                self.encoder = self.encoder_cls(
                    size=options.size, fps=Fraction(self.source.fps), live=True,
                    preset=options.preset
                    or (LIVE_LAYER_MOTION_PRESET if options.layer_kbps > 0 else "medium"),
                    layer_kbps=options.layer_kbps, reference=options.reference,
                    packet_frames=options.packet_frames, start_full=True,
                    layer_follows_link=options.follow_link, avatar=options.avatar,
                    pixel_aspect=(self.source.info.pixel_aspect
                                  if isinstance(self.source, _Source) else Fraction(1)),
                )
            except BaseException:
                self.source.close()
                raise
        # One worker per direction keeps encoder and decoder calls ordered and off the loop.
        self._encode_pool = ThreadPoolExecutor(1, thread_name_prefix="facecodec-encode")
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix="facecodec-decode")
        self.viewer: Viewer | None = None
        self.window = False
        self.next_index = 0  # frame indices keep counting across sessions
        self.shown_aspect = Fraction(1)  # the pixel shape of the pictures received
        self.source_done = False
        self.deadline = time.monotonic() + options.seconds if options.seconds else None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def audio_source(self) -> tuple[bool, str | None]:
        audio = self.options.audio
        if self.options.peer.microphone is not None:
            return True, None
        if audio == "none":
            return False, None
        if audio == "silence":
            return True, None
        if audio == "auto":
            return True, self.source.path if self.source is not None else None
        return True, audio

    async def run(self, room: str, signal_url: str) -> CallStats:
        wall0, cpu0 = time.monotonic(), time.process_time()
        # Before any peer can send (and a renderer that does not exist fails here): the
        # first frames of a stream would otherwise wait for the networks to load, about a
        # second (measured: 29-55 of the first frames then not drawn).
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._decode_pool, self.decoder_cls.warm_up, self.options.renderer, self.options.size)
        if self.source is not None:  # likewise the sender's (its first 16 frames were skipped)
            await loop.run_in_executor(self._encode_pool, self.encoder.warm_up)
            await loop.run_in_executor(self._encode_pool, self.source.first_frame)
        # What is loaded by now (torch, MediaPipe, aiortc: millions of objects) lives as long
        # as the call; left to the collector, each full collection walked it all and held
        # the sending loop for 120-140 ms (4 frames skipped, seen twice in a 20 s call).
        gc.freeze()
        if self.render in ("local", "cloud"):
            self.viewer = Viewer(has_audio=self.options.audio != "none",
                                 self_view=self.source is not None)
            host = self.options.viewer_host if self.render == "cloud" else "127.0.0.1"
            self.stats.viewer_url = await self.viewer.start(host, self.options.viewer_port)
            if self.options.on_viewer is not None:
                self.options.on_viewer(self.stats.viewer_url)
            if self.options.window:
                self.window = try_open_window("facecodec")
        signaling = await SignalingClient.connect(signal_url, ca=self.options.signal_ca)
        try:
            await signaling.join(room)
            while not self.source_done:
                remaining = self.remaining()
                wait = (
                    self.options.wait_peer_s
                    if remaining is None
                    else min(remaining, self.options.wait_peer_s)
                )
                if wait <= 0:
                    break
                try:
                    initiator = await _wait_ready(signaling, wait)
                except FacecodecError as e:
                    if self.stats.sessions == 0:
                        raise
                    if isinstance(e, SignalingClosed):
                        self._signaling_lost()  # while waiting for a peer to come back
                    break
                if initiator is None:
                    if self.stats.sessions == 0:
                        raise FacecodecError(f"no peer joined room {room} within {wait:.0f} s")
                    break
                left = await self.session(signaling, initiator)
                if not (left and self.options.reconnect):
                    break
        finally:
            with contextlib.suppress(Exception):
                await signaling.send({"type": "bye"})
            await signaling.close()
            if self.viewer is not None:
                await self.viewer.stop()
            self._encode_pool.shutdown(wait=True)
            self._decode_pool.shutdown(wait=True)
            if self.encoder is not None:
                self.encoder.close()
            gc.unfreeze()  # a process that runs more calls (a test run) collects this one's
            self.stats.wall_seconds = time.monotonic() - wall0
            self.stats.cpu_seconds = time.process_time() - cpu0
        return self.stats

    def _signaling_lost(self) -> None:
        if not self.stats.signaling_lost and self.options.on_signaling_lost is not None:
            self.options.on_signaling_lost()
        self.stats.signaling_lost = True

    async def session(self, signaling: SignalingClient, initiator: bool) -> bool:
        """One connection to the other peer; True if it ended because that peer left."""
        send_audio, audio_file = self.audio_source()
        # The file the picture comes from: its sound goes with the frames.
        own = self.source if (isinstance(self.source, _Source)
                              and audio_file == self.source.path) else None
        peer = Peer(replace(
            self.options.peer, audio=audio_file, send_audio=send_audio,
            audio_follows_video=own is not None,
        ))
        if self.viewer is not None:
            peer.on_audio = self.viewer.publish_audio
        self.stats.sessions += 1
        tasks: list[asyncio.Task[Any]] = []
        try:
            try:
                await peer.negotiate(signaling, initiator)
            except FacecodecError:
                if not self.options.reconnect:
                    raise
                return True  # the other side left mid-setup: wait for the next one
            if self.options.on_connected is not None:
                self.options.on_connected()
            receiver = asyncio.ensure_future(self.receive(peer))
            watcher = asyncio.ensure_future(_wait_bye(signaling, self._signaling_lost))
            tasks = [receiver, watcher]
            if self.encoder is not None:
                tasks.append(asyncio.ensure_future(self.send(peer)))
            remaining = self.remaining()
            done, _ = await asyncio.wait(
                tasks, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                try:
                    task.result()  # surface errors from any side of the session
                except StreamRefused as e:
                    if not self.options.reconnect:
                        raise
                    # That peer's stream cannot be drawn: the call waits for the next one.
                    if self.options.on_peer_refused is not None:
                        self.options.on_peer_refused(str(e))
                    return True
            return watcher in done or receiver in done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.audio_bytes_sent += (await peer.audio_bytes())[0]
            self.stats.packets_lost += peer.stats.packets_lost
            self.stats.malformed_received += peer.malformed
            self.stats.motion_bytes_sent += peer.stats.motion_bytes_sent
            self.stats.keyframe_bytes_sent += peer.stats.keyframe_bytes_sent
            self.stats.layer_bytes_sent += peer.stats.layer_bytes_sent
            await peer.close()
            if self.viewer is not None:  # the page shows no one now
                self.viewer.other_side_avatar = False

    async def send(self, peer: Peer) -> None:
        """Encode the source in real time; returns when it ends (then the call hangs up)."""
        assert self.source is not None
        loop = asyncio.get_running_loop()
        fps = float(self.source.fps)
        if self.stats.sessions > 1:
            self.encoder.request_keyframe()  # the new receiver has no reference picture
        camera = self.source if isinstance(self.source, Camera) else None
        pending = None
        if camera is not None:
            # The clock starts at a picture's arrival, so the camera's pictures come on its
            # frame slots: a slot's time is then when its picture came, within the camera's
            # jitter, and latency counts from there.
            pending = await loop.run_in_executor(self._encode_pool, camera.next_frame)
        start = camera.arrived if camera is not None and pending is not None else time.time()
        if isinstance(self.source, _Source):
            # A frame a session ended while reading is gone: the file's frame indices (its
            # restarts') go on from the source's count.
            self.next_index = max(self.next_index, self.source.given)
        t0 = start - self.next_index / fps
        peer.send_control(start_message(self.encoder.header_bytes(), t0, fps))
        peer.start_sound_at(t0)  # the file's sound goes with its frames
        restarts = self.source.restarts if isinstance(self.source, _Source) else []
        told = 0  # restarts of a looped file's picture the peer knows (its sound restarts)
        try:
            while True:
                new = restarts[told:]  # appended to on the reading thread
                for at in new:
                    peer.start_sound_at(t0 + at / fps)
                told += len(new)
                index = self.next_index
                if camera is None:
                    delay = t0 + index / fps - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                frame, pending = pending, None
                if frame is None:
                    frame = await loop.run_in_executor(self._encode_pool, self.source.next_frame)
                if frame is None and camera is not None:
                    raise FacecodecError(f"camera {camera.spec}: no picture for "
                                         f"{STALL_TIMEOUT_S:g} s (unplugged, or taken by "
                                         "another program)")
                if frame is None:
                    break
                if camera is not None:
                    # A picture takes the slot of its arrival; slots the camera (or a busy
                    # sender, which takes the newest) left empty count as skipped, as a late
                    # file frame does.
                    index = round((camera.arrived - t0) * fps)
                    if index < self.next_index:
                        continue  # the camera runs faster than the rate it reported
                    self.stats.frames_skipped += index - self.next_index
                    self.next_index = index + 1
                else:
                    self.next_index += 1
                    if time.time() - (t0 + index / fps) > 1.0 / fps:
                        self.stats.frames_skipped += 1  # a live camera would have moved on too
                        continue
                packets = await loop.run_in_executor(
                    self._encode_pool, self.encoder.push, frame, index
                )
                for packet in packets:
                    peer.send_packet(packet)
                self.stats.frames_sent += 1
                self.stats.frames_without_face = len(
                    self.encoder.analyzer.report.frames_without_face)
                if self.viewer is not None and index % SELF_VIEW_EVERY == 0:
                    face = await loop.run_in_executor(
                        self._encode_pool, self.encoder.sent_face, frame)
                    if face is not None:
                        await self.viewer.publish_self(
                            square_pixels(face, self.encoder.header.pixel_aspect), index)
        finally:
            self.stats.send_seconds += time.time() - start
        self.source_done = True
        await asyncio.sleep(0.3)  # let the last packets leave before hanging up

    async def receive(self, peer: Peer) -> None:
        """Decode what arrives until the connection closes."""
        loop = asyncio.get_running_loop()
        decoder: Any = None
        t0 = fps = 0.0
        last_pli = last_resync = -1e9
        last_report = time.monotonic()
        reported = (0, 0)  # motion packets (lost, received) at the last loss report
        last_index: int | None = None
        # Whether motion went missing since the last frame drawn (lost on the way, or came
        # and could not be drawn): a gap in frame indices with none is the sender's. Seen
        # in the order packets are taken here, not as they arrive (a queue may hold both).
        missed, motion_seq = False, None
        queue, link = QueueDelay(), LinkRate()
        reported_kbps: float | None = None
        sound = SoundRate()  # this peer's sound starts at the asked rate (Peer: use_opus)
        while True:
            event = await peer.events.get()
            if isinstance(event, PeerClosed):
                return
            if isinstance(event, ControlReceived):
                msg = event.message
                if msg["type"] == "pli" and self.encoder is not None:
                    self.stats.keyframe_requests_received += 1
                    self.encoder.request_keyframe()
                elif msg["type"] == "resync" and self.encoder is not None:
                    self.stats.resync_requests_received += 1
                    self.encoder.request_resync()
                elif msg["type"] == "loss" and self.encoder is not None:
                    self.encoder.report_loss(msg["fraction"], msg["queue_ms"],
                                             msg.get("rate_kbps"))
                    self.stats.resilient_reports += self.encoder.resilient
                    self.stats.congested_reports += self.encoder.congested
                    layer = self.encoder.layer
                    if layer is not None:
                        self.stats.layer_limited_reports += layer.kbps < layer.ceiling
                        self.stats.layer_paused_reports += layer.paused
                    if self.options.follow_link:
                        pace = self.encoder.pace_kbps
                        peer.pace(pace)
                        self.stats.paced_reports += pace is not None
                        thin = sound.report(
                            self.encoder.link_congested, not self.encoder.link_full,
                            layer is None or layer.paused, sound_sent_within(SPEAKING_S))
                        set_thin_sound(thin)
                        self.stats.sound_thin_reports += thin
                elif msg["type"] == "start":
                    try:
                        decoder = await loop.run_in_executor(
                            self._decode_pool, self.decoder_cls, msg["header"],
                            self.options.renderer, self.options.torch_threads,
                            self.options.eye_contact, self.options.pose,
                        )
                    except BitstreamError as e:  # nothing it sends can be drawn
                        raise StreamRefused(f"the other side's stream header: {e}") from None
                    t0, fps, last_index, motion_seq = msg["t0"], msg["fps"], None, None
                    self.shown_aspect = decoder.decoder.header.pixel_aspect
                    avatar = decoder.decoder.header.avatar
                    # Said when it changes, across peers too: one that comes back as their
                    # own face after an avatar says so.
                    if (avatar != self.stats.other_side_avatar
                            and self.options.on_other_side is not None):
                        self.options.on_other_side(avatar)
                    self.stats.other_side_avatar = avatar
                    if self.viewer is not None:
                        self.viewer.other_side_avatar = avatar
                    queue, link, reported_kbps = QueueDelay(), LinkRate(), None
                continue
            assert isinstance(event, PacketReceived)
            if decoder is None:
                continue  # motion that overtook the stream start on the other channel
            fused, undrawn = decoder.stats.frames_fused, decoder.stats.frames_undrawn
            newest = decoder.last_frame
            hurried, holds = decoder.stats.frames_hurried, decoder.stats.motion_holds
            stale = decoder.stats.motion_packets_stale
            # A damaged number says nothing; a reordered packet is older than the newest.
            if not event.info.reliable and is_intact(event.data):
                ahead = 1 if motion_seq is None else seq_ahead(motion_seq, event.info.seq)
                if ahead:
                    missed |= ahead > 1  # lost on the way, or shed by either side's queue
                    motion_seq = event.info.seq
            waited = time.time() - event.arrival
            late, hurry_s = self.options.late_s, self.options.hurry_s
            draw = late is None or waited <= late
            hurry = hurry_s is not None and waited > hurry_s
            try:
                frames = await loop.run_in_executor(
                    self._decode_pool, decoder.push, event.data, draw, hurry
                )
            except BitstreamError:
                self.stats.decode_errors += 1
                frames = []
            if (not event.info.reliable and draw and not frames
                    and decoder.stats.motion_packets_stale == stale):
                missed = True  # came but held: a loss before it, its keyframe missing
            if event.info.reliable:
                link.other(event.arrival, t0 + event.info.timestamp / fps, len(event.data),
                           shared=event.info.type in LAYER_TYPES)
            else:
                sent_frame = event.info.timestamp
                if decoder.last_frame not in (None, newest):
                    # From the capture of the packet's last frame, when it could first be sent.
                    sent_frame = decoder.last_frame
                    queue.add(event.arrival - (t0 + sent_frame / fps), event.arrival)
                link.motion(event.arrival, t0 + sent_frame / fps, len(event.data))
            self.stats.frames_fused += decoder.stats.frames_fused - fused
            self.stats.frames_hurried += decoder.stats.frames_hurried - hurried
            self.stats.motion_holds += decoder.stats.motion_holds - holds
            if decoder.stats.frames_undrawn > undrawn:  # skipped, not lost: not concealed
                self.stats.frames_late += decoder.stats.frames_undrawn - undrawn
                last_index = max(last_index or 0, decoder.last_frame or 0)
            first: tuple[int, float] | None = None
            for index, rgb in frames:
                if first is not None and peer.events.empty():
                    # Frames that came in one packet are shown a frame's time apart, as
                    # they were captured (not when the receiver is behind: it catches up).
                    due = first[1] + (index - first[0]) / fps
                    await asyncio.sleep(max(0.0, due - time.time()))
                await self.show(index, rgb, t0 + index / fps)
                if first is None:
                    first = (index, time.time())
                if last_index is not None and index > last_index + 1:
                    if missed:
                        self.stats.frames_concealed += index - last_index - 1
                    else:
                        self.stats.frames_unsent += index - last_index - 1
                missed = False
                last_index = index if last_index is None else max(last_index, index)
            # A drop in the link's estimate is reported at once: the link is full now.
            dropped = (reported_kbps is not None and link.kbps is not None
                       and link.kbps < RATE_DROP_REPORT * reported_kbps)
            if dropped or time.monotonic() - last_report > self.options.loss_report_s:
                last_report = time.monotonic()
                lost, got = peer.stats.motion_seq.lost, peer.stats.motion_seq.received
                new_lost, new_got = lost - reported[0], got - reported[1]
                reported = (lost, got)
                fraction = max(new_lost, 0) / max(max(new_lost, 0) + new_got, 1)
                if new_lost + new_got > 0 and peer.send_control(
                    loss_report(fraction, queue.take(), link.kbps), reliable=False
                ):
                    self.stats.loss_reports_sent += 1
                    if link.kbps is not None:
                        reported_kbps = link.kbps
                        self.stats.link_kbps.append(link.kbps)
            if (
                decoder.needs_keyframe()
                and time.monotonic() - last_pli > self.options.pli_interval_s
            ):
                last_pli = time.monotonic()
                if peer.send_control(keyframe_request(), reliable=False):
                    self.stats.keyframe_requests_sent += 1
            elif (
                decoder.needs_resync()
                and time.monotonic() - last_resync > self.options.resync_interval_s
            ):
                # Held since motion was lost: a RESYNC now, not at the sender's next second.
                last_resync = time.monotonic()
                if peer.send_control(resync_request(), reliable=False):
                    self.stats.resync_requests_sent += 1

    async def show(self, index: int, rgb: np.ndarray, captured: float) -> None:
        self.stats.rendered(time.time(), captured)
        if self.viewer is not None or self.window:
            shown = square_pixels(rgb, self.shown_aspect)
            if self.viewer is not None:
                await self.viewer.publish_frame(shown, index)
            if self.window:
                import cv2

                cv2.imshow("facecodec", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                cv2.waitKey(1)
        if self.options.on_frame is not None:
            self.options.on_frame(index, rgb)


class StreamRefused(BitstreamError):
    """The other side's stream cannot be drawn here at all (its header is refused)."""


class SignalingClosed(FacecodecError):
    """The signaling server closed the connection (stopped, restarted, or gone)."""


async def _wait_ready(signaling: SignalingClient, timeout: float) -> bool | None:
    """Wait for the server to pair us with a peer: whether this side makes the offer (the
    initiator); None on timeout. A closed server or a malformed message is an error."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await signaling.receive()
                if msg.get("type") == "closed":
                    raise SignalingClosed("the signaling server closed the connection")
                if msg.get("type") == "ready":
                    initiator = msg.get("initiator")
                    if not isinstance(initiator, bool):
                        raise FacecodecError("signaling server sent a malformed message")
                    return initiator
    except TimeoutError:
        return None


async def _wait_bye(signaling: SignalingClient, lost: Callable[[], None]) -> None:
    """Return when the other peer says it leaves. The signaling server going away does not
    end the session (it ended every call at once, without a word): `lost` is told, and the
    session goes on until the other peer's connection ends or the call's time is up."""
    while True:
        msg = await signaling.receive()
        if msg.get("type") == "bye":
            return
        if msg.get("type") == "closed":
            lost()
            await asyncio.Event().wait()  # cancelled with the session


async def run_call(
    room: str,
    signal_url: str,
    source: str | None,
    render: str = "local",
    options: CallOptions | None = None,
    stats: CallStats | None = None,
) -> CallStats:
    """Join `room` on the signaling server at `signal_url` and run one side of a call.

    source: a video file to send (paced in real time), or None to only receive.
    render: "local" (browser viewer on 127.0.0.1), "cloud" (viewer on options.viewer_host, so
    a thin browser elsewhere watches ordinary video), or "none" (decode and measure only).
    stats: filled as the call goes, so that a caller still has them when the call is
    interrupted.
    """
    if not ROOM_PATTERN.fullmatch(room):
        raise FacecodecError(f"room {room!r} must match [A-Za-z0-9_-]{{1,64}}")
    call = _Call(source, render, options or CallOptions(),
                 stats if stats is not None else CallStats())
    try:
        return await call.run(room, signal_url)
    finally:
        if call.source is not None:
            call.source.close()  # a camera's reading thread, whatever ended the call


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("room", help="room name shared by both peers ([A-Za-z0-9_-]{1,64})")
    parser.add_argument("--signal", default="ws://127.0.0.1:8765/", help="signaling server URL")
    parser.add_argument("--signal-ca", type=path_arg, metavar="PEM",
                        help="trust a wss:// signaling server whose certificate this authority "
                        "(or self-signed file) issued")
    parser.add_argument("--source", help="video file to send (omit to only receive)")
    parser.add_argument("--camera", nargs="?", const="0", metavar="DEVICE",
                        help="send a webcam instead: its index or device path (default 0)")
    parser.add_argument("--render", choices=RENDER_MODES, default="local")
    parser.add_argument("--seconds", type=float, help="hang up after this many seconds")
    parser.add_argument("--loop", action="store_true", help="loop the source file")
    parser.add_argument("--audio", default="auto", help=" | ".join((*AUDIO_WORDS, "FILE")))
    parser.add_argument("--microphone", nargs="?", const="default", metavar="DEVICE",
                        help="send a microphone's sound (default: the system's default one)")
    parser.add_argument("--audio-kbps", type=float, default=AUDIO_KBPS,
                        help=f"Opus rate of the sound sent (default {AUDIO_KBPS:g})")
    parser.add_argument("--audio-frame-ms", type=int, default=AUDIO_FRAME_MS,
                        choices=AUDIO_FRAME_CHOICES, help="Opus frame length: longer frames "
                        "send fewer packets, whose headers cost more than speech on thin links")
    parser.add_argument("--packet-frames", type=int, default=1, metavar="N",
                        help=f"frames each motion packet carries (1..{MAX_CALL_PACKET_FRAMES}): "
                        "2 or 3 put fewer packets on the wire, each frame a frame's time "
                        "later (default 1)")
    parser.add_argument("--follow-link", action=argparse.BooleanOptionalAction,
                        default=True, help="keep the layer within the rate the receiver "
                        "estimates the link carries (pausing it on a link too thin for it), "
                        "send the sound at 16 kbps in 60 ms frames while the link stays full, "
                        "and pace a layer call's packets while the link is full (default on; "
                        "off: the layer and the sound keep their rates whatever the link, "
                        "and nothing is paced)")
    parser.add_argument("--audio-dtx", action=argparse.BooleanOptionalAction, default=True,
                        help="send no sound packets while nobody speaks (voice activity "
                        "detection; default on)")
    parser.add_argument("--loopback", action="store_true", help="offer 127.0.0.1 to ICE")
    parser.add_argument("--stun", metavar="URL",
                        help="STUN server for peers behind NATs (stun:HOST[:PORT])")
    parser.add_argument("--turn", metavar="URL", help="TURN relay for peers that cannot reach "
                        "each other (turn:HOST[:PORT][?transport=udp|tcp], turns:...)")
    parser.add_argument("--relay-only", action="store_true", help="send and receive only "
                        "through the TURN relay: the other side never learns this address")
    parser.add_argument("--turn-user", help="the TURN relay's username")
    parser.add_argument("--turn-password", help="the TURN relay's password (or set "
                        f"{TURN_PASSWORD_ENV}, which other users cannot read in ps)")
    parser.add_argument("--reconnect", action="store_true", help="wait for the peer to rejoin")
    parser.add_argument("--viewer-host", default="0.0.0.0", help="viewer address (cloud mode)")
    parser.add_argument("--viewer-port", type=int, default=8080)
    parser.add_argument("--window", action="store_true", help="also try a desktop window")
    parser.add_argument("--loss", type=float, default=0.0, help="drop this share of packets")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help=f"random extra delay, 0..{MAX_JITTER_MS:g} ms")
    parser.add_argument("--preset", choices=PRESETS,
                        help="motion preset (default medium; low with a layer)")
    parser.add_argument("--renderer", default=CALL_RENDERER)
    parser.add_argument("--eye-contact", type=float, nargs="?", const=10.0, default=None,
                        metavar="DEG", help="draw the peer's eyes turned up into the camera, "
                        "DEG degrees above where they look (default 10; 0..30); the peer's "
                        "layer is then not drawn")
    add_pose_arguments(parser, "the peer's head")
    parser.add_argument("--late-ms", type=float, default=100.0,
                        help="decode but do not draw packets that waited longer than this for "
                             "the receiver, so a slow renderer stays in real time (0: draw all)")
    parser.add_argument("--hurry-ms", type=float, default=40.0,
                        help="draw packets that waited longer than this the cheapest way "
                             "(the neural renderer's warp, the layer's training-free fusion) "
                             "(0: never)")
    parser.add_argument("--layer-kbps", type=float, default=0.0,
                        help="send the low-resolution layer at this rate (0: motion only)")
    parser.add_argument("--reference", choices=("best", "first"), default="best",
                        help="motion only: send a recent frame as a new reference picture when "
                             "it draws the recent frames better (best), or keep the first (first)")
    parser.add_argument("--avatar", type=path_arg, default=None, metavar="PORTRAIT",
                        help="appear as this portrait, driven by your face: your own face is "
                             "never sent (motion only: no layer)")
    parser.add_argument("--stats-json", type=path_arg,
                        help="write this side's call summary to this JSON file")


def ice_servers(args: argparse.Namespace) -> tuple[IceServer, ...]:
    """The call's STUN and TURN servers from its arguments, checked before any connection."""
    servers = []
    if args.stun:
        if not args.stun.startswith("stun"):
            raise FacecodecError(f"--stun {args.stun}: not a stun: URL")
        servers.append(IceServer(args.stun))
    password = args.turn_password or os.environ.get(TURN_PASSWORD_ENV)
    if args.turn:
        if not args.turn.startswith("turn"):
            raise FacecodecError(f"--turn {args.turn}: not a turn: or turns: URL")
        servers.append(IceServer(args.turn, args.turn_user, password))
    elif args.turn_user or args.turn_password or args.relay_only:
        raise FacecodecError("--turn-user, --turn-password and --relay-only need --turn")
    return tuple(servers)


def _say_whom(avatar: bool) -> None:
    """Whom the other side's picture shows is the user's to know: a portrait is not them."""
    print(f"the other side {AVATAR_WORDS if avatar else 'now shows their own face'}",
          flush=True)


def call_main(args: argparse.Namespace) -> int:
    """Run one side of a call from parsed arguments; print a one-line summary."""
    for flag, value in (("--source", args.source), ("--audio", args.audio)):
        if value == "":
            raise FacecodecError(f"{flag} needs a file name")
    sound_file = None if args.audio in AUDIO_WORDS else args.audio
    if args.stats_json is not None:
        inputs = (args.source, sound_file, args.avatar, args.signal_ca)
        if any(p is not None and same_file(Path(p), args.stats_json) for p in inputs):
            raise FacecodecError(f"cannot write {args.stats_json}: it is one of the call's "
                                 "inputs")
        check_writable(args.stats_json)  # now, not when the call has ended
    impairment = None
    if args.loss or args.jitter_ms:
        impairment = Impairment(loss=args.loss, jitter_ms=args.jitter_ms)
    check_url(args.signal)  # now, not after the networks have loaded
    check_port("--viewer-port", args.viewer_port)
    check_packet_frames(args.packet_frames)
    if args.microphone is not None:
        if args.audio != "auto":
            raise FacecodecError("send a microphone (--microphone) or --audio, not both")
        device = None if args.microphone == "default" else args.microphone
        open_microphone(device).close()  # one that cannot be opened is refused now
    elif sound_file is not None and not has_sound(sound_file):
        # Likewise a file that cannot be read, or one with nothing to hear (silence it is not).
        raise FacecodecError(f"--audio {args.audio}: has no sound stream")
    if args.signal_ca is not None:
        client_tls(args.signal_ca)
    for flag, value in (("--late-ms", args.late_ms), ("--hurry-ms", args.hurry_ms)):
        if not value >= 0:
            raise FacecodecError(f"{flag} must be 0 or more (got {value})")
    if args.seconds is not None and not 0 < args.seconds < float("inf"):
        raise FacecodecError(f"--seconds must be a finite number above 0 (got {args.seconds})")
    check_layer_kbps(args.layer_kbps)  # now, not when the stream starts
    if args.avatar is not None and args.source is None and args.camera is None:
        raise FacecodecError("--avatar is what this side sends: it needs --source or --camera")
    # Built (and an angle out of range refused) now, not when the peer's stream starts.
    eye_contact = EyeContact(args.eye_contact) if args.eye_contact is not None else None
    pose = pose_of(args)
    options = CallOptions(
        seconds=args.seconds,
        loop_source=args.loop,
        camera=args.camera,
        audio=args.audio,
        peer=PeerOptions(
            loopback=args.loopback,
            ice_servers=ice_servers(args),
            relay_only=args.relay_only,
            microphone=args.microphone,
            audio_kbps=args.audio_kbps,
            audio_frame_ms=args.audio_frame_ms,
            audio_dtx=args.audio_dtx,
            impairment=impairment,
        ),
        packet_frames=args.packet_frames,
        follow_link=args.follow_link,
        signal_ca=args.signal_ca,
        reconnect=args.reconnect,
        viewer_host=args.viewer_host,
        viewer_port=args.viewer_port,
        window=args.window,
        preset=args.preset,
        renderer=args.renderer,
        eye_contact=eye_contact,
        pose=pose if pose.active else None,
        layer_kbps=args.layer_kbps,
        reference=args.reference,
        avatar=args.avatar,
        late_s=args.late_ms / 1000 if args.late_ms > 0 else None,
        hurry_s=args.hurry_ms / 1000 if args.hurry_ms > 0 else None,
        on_viewer=lambda url: print(f"viewer: {url}", flush=True),
        on_connected=lambda: print("connected", flush=True),
        on_other_side=_say_whom,
        on_peer_refused=lambda why: print(f"{why}: waiting for the next peer", flush=True),
        on_signaling_lost=lambda: print(
            "the signaling server went away: the call goes on"
            + (", but no other peer can join it" if args.reconnect else ""), flush=True),
    )
    stats = CallStats()
    try:
        with stall_limit(CALL_STALL_LIMIT_S):
            terminated = asyncio.run(until_sigterm(
                run_call(args.room, args.signal, args.source, args.render, options, stats)))
    except KeyboardInterrupt:
        # Ctrl-C is how a call is hung up: the call has said goodbye and closed (run's
        # cleanup) and its summary follows, as ping's does. Before any peer came it is an
        # interruption.
        if stats.sessions == 0:
            raise
    except FacecodecError:
        # A call that ended in an error still says, where asked, what it did until then.
        if args.stats_json is not None and stats.sessions:
            write_text(args.stats_json, json.dumps(stats.summary(), indent=2))
        raise
    else:
        if terminated and stats.sessions == 0:
            raise Terminated  # likewise SIGTERM
    s = stats.summary()
    if args.stats_json is not None:
        write_text(args.stats_json, json.dumps(s, indent=2))
    print(
        f"sent {s['frames_sent']} frames, rendered {s['frames_rendered']} at {s['fps']:.1f} fps, "
        f"motion {s['motion_kbps']:.2f} kbps, layer {s['layer_kbps']:.2f} kbps, "
        f"audio {s['audio_kbps']:.1f} kbps, "
        f"latency p50 {s['latency_p50_ms'] or 0:.0f} ms"
        + (f", {count(s['frames_without_face'], 'frame')} sent without a face in it"
           + (" (no face was found: the other side saw nothing)"
              if s["frames_without_face"] == s["frames_sent"] else "")
           if s["frames_without_face"] else "")
        + (f", {count(s['frames_concealed'], 'frame')} lost on the way (longest freeze "
           f"{s['max_render_gap_ms'] or 0:.0f} ms)" if s["frames_concealed"] else "")
        + (f", {count(s['frames_unsent'], 'frame')} not sent by the other side (its camera "
           "or encoder was behind)"
           if s["frames_unsent"] else "")
        + (f", {count(s['frames_late'], 'frame')} not drawn (behind real time)"
           if s["frames_late"] else "")
        + (f", {s['frames_hurried']} drawn the cheap way" if s["frames_hurried"] else "")
        + (f", {count(s['malformed_received'], 'malformed message')} dropped"
           if s["malformed_received"] else ""),
        flush=True,
    )
    return 0
