"""A small browser viewer: rendered frames as MJPEG, received audio as a streamed WAV that
the page plays through Web Audio, a little ahead of the speaker.

The same server is the "cloud rendering" mode: a machine that runs the decoder and renderer
streams ordinary video (JPEG frames) to a thin browser that needs no codec at all.

Endpoints: `/` the page, `/stream.mjpg` multipart JPEG frames, `/audio.wav` live PCM (when the
call has audio), `/status` JSON, `/report` where the page posts how many frames it has shown
(so a test, or an operator, can tell the browser really decodes them).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from aiohttp import web

from facecodec.bitstream.container import AVATAR_WORDS
from facecodec.errors import FacecodecError
from facecodec.stream.wire import untrusted_json

BOUNDARY = "facecodecframe"
MAX_AUDIO_QUEUE = 50  # 1 s of 20 ms frames; a slow listener loses audio, it never stalls the call
# The page schedules each piece of sound this far ahead of the speaker (room for the jitter
# of its arrival; a step more each time it runs dry), and drops sound that would be queued
# further ahead than the maximum.
AUDIO_LEAD_S, AUDIO_LEAD_STEP_S, AUDIO_MAX_LEAD_S = 0.08, 0.02, 0.25
# Sound queued this much over its aim is trimmed back by leaving out quiet pieces (peak under
# AUDIO_QUIET of full scale: the silence a quiet side's stream is filled with, pauses).
AUDIO_TRIM_S, AUDIO_QUIET = 0.04, 0.01

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;background:#111;color:#ddd;margin:2em}}
img{{image-rendering:auto;width:512px;height:512px;background:#000;object-fit:contain}}
#self{{width:128px;height:128px;vertical-align:bottom;margin-left:1em}}</style>
</head><body>
<h1>{title}</h1>
<img id="video" alt="waiting for the first frame">{self_view}
<p id="who" hidden>The other side {avatar_words}.</p>
<p id="stats">connecting&hellip;</p>
<p id="audio-state">{audio_text}</p>
<button id="play-audio" {audio_disabled}>Play audio</button>
<script>
// Frames are read from the multipart stream by hand (rather than <img src=...mjpg>) so the
// page knows exactly how many it has decoded and can report it back.
const img = document.getElementById("video");
const stats = document.getElementById("stats");
const who = document.getElementById("who");  // shown while the other side is an avatar
// Size of the last frame shown: img.naturalWidth reads 0 while the next frame loads.
let shown = 0, lastUrl = null, started = performance.now(), width = 0, height = 0;
// Sound: seconds played out, dropped to catch up, and queued ahead of the speaker.
let actx = null, nextTime = 0, scheduled = 0, dropped = 0, gaps = 0;
function lead() {{ return actx ? Math.max(0, nextTime - actx.currentTime) : 0; }}
function report() {{
  fetch("/report", {{method: "POST", body: JSON.stringify({{frames: shown,
    width: width, height: height, audio_ms: Math.max(0, scheduled - lead()) * 1000,
    audio_dropped_ms: dropped * 1000, audio_lead_ms: lead() * 1000, audio_gaps: gaps,
    video_delay_ms: soundDelay() * 1000}})
  }}).then(r => r.json()).then(m => {{ who.hidden = !m.avatar; }}).catch(() => {{}});
}}
setInterval(report, 500);
function indexOf(buf, len, pattern) {{
  outer: for (let i = 0; i + pattern.length <= len; i++) {{
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }}
  return -1;
}}
async function run() {{
  const response = await fetch("/stream.mjpg");
  const reader = response.body.getReader();
  const sep = new TextEncoder().encode("\\r\\n\\r\\n");
  let buf = new Uint8Array(0);
  for (;;) {{
    const {{value, done}} = await reader.read();
    if (done) {{ stats.textContent = "stream ended after " + shown + " frames"; return; }}
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf); joined.set(value, buf.length); buf = joined;
    for (;;) {{
      const end = indexOf(buf, Math.min(buf.length, 512), sep);
      if (end < 0) break;
      const head = new TextDecoder().decode(buf.subarray(0, end));
      const m = /Content-Length: *(\\d+)/i.exec(head);
      if (!m) {{ buf = buf.subarray(end + 4); continue; }}
      const n = parseInt(m[1]);
      if (buf.length < end + 4 + n) break;
      const jpeg = buf.slice(end + 4, end + 4 + n);
      buf = buf.subarray(end + 4 + n);
      const url = URL.createObjectURL(new Blob([jpeg], {{type: "image/jpeg"}}));
      blobs++;
      // With the sound on, a frame waits as long as the sound that came with it (queued,
      // and in the output), so that lips and voice stay together; in order, whatever the
      // wait.
      const due = Math.max(lastDue, performance.now() + soundDelay() * 1000);
      lastDue = due;
      setTimeout(() => show(url), due - performance.now());
    }}
  }}
}}
let lastDue = 0;
function soundDelay() {{
  return actx && scheduled > 0 ? lead() + actx.baseLatency + (actx.outputLatency || 0) : 0;
}}
// Each frame is a blob URL, freed once the next frame has loaded, or at once if the next
// one replaces it before it loaded (frames that come together): else a long call's page
// would keep every such frame.
let pendingUrl = null, blobs = 0;
function free(url) {{ URL.revokeObjectURL(url); blobs--; }}
function show(url) {{
  if (pendingUrl) free(pendingUrl);
  pendingUrl = url;
  img.onload = () => {{ shown++; if (lastUrl) free(lastUrl); lastUrl = url; pendingUrl = null;
    width = img.naturalWidth; height = img.naturalHeight;
    const fps = shown / ((performance.now() - started) / 1000);
    stats.textContent = shown + " frames shown, " + fps.toFixed(1) + " fps"; }};
  img.src = url;
}}
run().catch(e => {{ stats.textContent = "stream error: " + e; }});
// The sound is played through Web Audio, each piece of the live WAV scheduled as it comes, a
// little ahead of the speaker: an <audio> element buffers a stream for over a second before
// it plays, and the frames would have to wait as long.
const MAX_LEAD = {max_lead_s};
let ahead = {lead_s};  // how far ahead of the speaker a piece is scheduled after running dry
async function playAudio() {{
  const reader = (await fetch("/audio.wav")).body.getReader();
  let rest = new Uint8Array(0), rate = 0, channels = 0;
  for (;;) {{
    const {{value, done}} = await reader.read();
    if (done) return;
    let buf = new Uint8Array(rest.length + value.length);
    buf.set(rest); buf.set(value, rest.length);
    if (!rate) {{
      if (buf.length < 44) {{ rest = buf; continue; }}
      const head = new DataView(buf.buffer, 0, 44);
      channels = head.getUint16(22, true); rate = head.getUint32(24, true);
      buf = buf.subarray(44);
    }}
    const block = 2 * channels, n = Math.floor(buf.length / block);
    rest = buf.slice(n * block);
    if (n === 0) continue;
    const now = actx.currentTime;
    if (nextTime < now) {{  // ran dry: start again a longer lead ahead (up to the maximum)
      if (scheduled > 0) {{ gaps++; ahead = Math.min(ahead + {lead_step_s}, MAX_LEAD - 0.05); }}
      nextTime = now + ahead;
    }}
    if (nextTime - now > MAX_LEAD) {{ dropped += n / rate; continue; }}  // behind: catch up
    const pcm = new DataView(buf.buffer, buf.byteOffset, n * block);
    const piece = actx.createBuffer(channels, n, rate);
    let loud = 0;
    for (let c = 0; c < channels; c++) {{
      const out = piece.getChannelData(c);
      for (let i = 0; i < n; i++) {{
        out[i] = pcm.getInt16((i * channels + c) * 2, true) / 32768;
        loud = Math.max(loud, Math.abs(out[i]));
      }}
    }}
    // A burst of sound leaves the queue longer than it needs to be, and every frame waits
    // as long: a quiet piece is left out while the queue is over its aim, so it shrinks back
    // where nobody hears it.
    if (nextTime - now > ahead + {trim_s} && loud < {quiet}) {{ dropped += n / rate; continue; }}
    const source = actx.createBufferSource();
    source.buffer = piece; source.connect(actx.destination); source.start(nextTime);
    nextTime += n / rate; scheduled += n / rate;
  }}
}}
document.getElementById("play-audio").onclick = () => {{
  // Browsers only start sound after a click, and in the click's own handler.
  if (actx) return;
  actx = new AudioContext({{latencyHint: "interactive"}});
  document.getElementById("audio-state").textContent = "Audio: playing the call's sound.";
  playAudio().catch(e => {{
    document.getElementById("audio-state").textContent = "Audio stopped: " + e; }});
}};
</script></body></html>
"""


@dataclass
class ViewerStats:
    frames_published: int = 0
    frames_served: int = 0  # JPEGs written to browser connections
    browser_frames_shown: int = 0  # last count the page reported
    browser_size: tuple[int, int] = (0, 0)
    audio_ms_served: float = 0.0  # sound written to browser connections
    browser_audio_ms: float = 0.0  # sound the page reported played out
    browser_audio_dropped_ms: float = 0.0  # ... and dropped to keep up
    browser_audio_lead_ms: float = 0.0  # ... and queued ahead of its speaker
    browser_audio_gaps: int = 0  # ... and the times it ran dry after it had started
    browser_video_delay_ms: float = 0.0  # ... and how long it holds each frame for the sound


class Viewer:
    """Serves the latest rendered frame to any number of browsers."""

    def __init__(
        self, title: str = "facecodec call", has_audio: bool = True, jpeg_quality: int = 85,
        self_view: bool = False,
    ) -> None:
        """`self_view`: the page also shows, small, the face this side sends (publish_self)."""
        self.title = title
        self.has_audio = has_audio
        self.self_view = self_view
        self._self_jpeg: bytes | None = None
        self._self_index = -1
        self._new_self = asyncio.Condition()
        self.jpeg_quality = jpeg_quality
        self.stats = ViewerStats()
        # Whether the other side appears as an avatar (its stream says so): the page says
        # whom it shows, in the answer to each of its reports.
        self.other_side_avatar = False
        self._jpeg: bytes | None = None
        self._frame_index = -1
        self._new_frame = asyncio.Condition()
        self._audio_listeners: set[asyncio.Queue[bytes]] = set()
        self._audio_format: tuple[int, int] | None = None  # (rate, channels)
        self._stopping = False
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/stream.mjpg", self._mjpeg)
        app.router.add_get("/self.mjpg", self._self_mjpeg)
        app.router.add_get("/audio.wav", self._audio)
        app.router.add_get("/status", self._status)
        app.router.add_post("/report", self._report)
        self.app = app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the page URL (port 0 picks a free port)."""
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise FacecodecError(f"viewer cannot listen on {host}:{port}: {exc}") from None
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        shown = "127.0.0.1" if bound[0] in ("0.0.0.0", "::") else bound[0]
        return f"http://{shown}:{bound[1]}/"

    async def stop(self) -> None:
        self._stopping = True
        async with self._new_frame:
            self._new_frame.notify_all()
        async with self._new_self:
            self._new_self.notify_all()
        for queue in self._audio_listeners:
            queue.put_nowait(b"")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _encode(self, rgb: np.ndarray) -> bytes:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        ok, jpeg = cv2.imencode(
            ".jpg",
            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality],
        )
        if not ok:
            raise ValueError("JPEG encoding failed")
        return jpeg.tobytes()

    async def publish_frame(self, rgb: np.ndarray, index: int) -> None:
        """Show a rendered frame (H x W x 3 uint8 RGB)."""
        jpeg = self._encode(rgb)
        async with self._new_frame:
            self._jpeg = jpeg
            self._frame_index = index
            self.stats.frames_published += 1
            self._new_frame.notify_all()

    async def publish_self(self, rgb: np.ndarray, index: int) -> None:
        """Show, small, the face this side sends (H x W x 3 uint8 RGB)."""
        jpeg = self._encode(rgb)
        async with self._new_self:
            self._self_jpeg, self._self_index = jpeg, index
            self._new_self.notify_all()

    def publish_audio(self, frame: av.AudioFrame) -> None:
        """Forward one received audio frame to listening browsers as 16-bit PCM."""
        if not self._audio_listeners:
            return
        pcm = frame.to_ndarray()
        if frame.format.name != "s16":
            pcm = (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16)
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            pcm = pcm.T  # (channels, samples) -> interleaved
        if self._audio_format is None:
            self._audio_format = (frame.sample_rate, channels)
        if self._audio_format != (frame.sample_rate, channels):
            return  # a WAV stream cannot change format midway
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        for queue in self._audio_listeners:
            if queue.qsize() < MAX_AUDIO_QUEUE:
                queue.put_nowait(data)

    # --- handlers ------------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        audio_text = (
            "Audio: press Play audio to hear the call (browsers block sound until a click)."
            if self.has_audio
            else "Audio: this call carries no audio, so none is played."
        )
        self_view = ('\n<img id="self" src="/self.mjpg" alt="your face, as sent">'
                     if self.self_view else "")
        body = _PAGE.format(
            title=self.title,
            self_view=self_view,
            avatar_words=AVATAR_WORDS,
            audio_text=audio_text,
            audio_disabled="" if self.has_audio else "disabled",
            lead_s=AUDIO_LEAD_S,
            lead_step_s=AUDIO_LEAD_STEP_S,
            max_lead_s=AUDIO_MAX_LEAD_S,
            trim_s=AUDIO_TRIM_S,
            quiet=AUDIO_QUIET,
        )
        return web.Response(text=body, content_type="text/html")

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._new_frame, lambda: (self._jpeg, self._frame_index),
                                 count=True)

    async def _self_mjpeg(self, request: web.Request) -> web.StreamResponse:
        if not self.self_view:
            raise web.HTTPNotFound(text="this side sends no video")
        return await self._serve(request, self._new_self,
                                 lambda: (self._self_jpeg, self._self_index), count=False)

    async def _serve(
        self, request: web.Request, new: asyncio.Condition,
        latest: Callable[[], tuple[bytes | None, int]], count: bool,
    ) -> web.StreamResponse:
        """An MJPEG stream of the latest picture, each one once (`count`: in frames_served)."""
        response = web.StreamResponse(
            headers={
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                "Cache-Control": "no-store",
            }
        )
        await response.prepare(request)
        sent_index = -2
        try:
            while not self._stopping:
                def ready(last: int = sent_index) -> bool:
                    return self._stopping or (latest()[0] is not None and latest()[1] != last)

                async with new:
                    await new.wait_for(ready)
                    jpeg, sent_index = latest()
                if self._stopping or jpeg is None:
                    break
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                await response.write(head + jpeg + b"\r\n")
                self.stats.frames_served += count
        except (ConnectionError, asyncio.CancelledError):
            pass  # the browser went away
        return response

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        if not self.has_audio:
            raise web.HTTPNotFound(text="this call carries no audio")
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._audio_listeners.add(queue)
        response = web.StreamResponse(
            headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            first = await queue.get()
            rate, channels = self._audio_format or (48000, 2)
            await response.write(wav_header(rate, channels))
            chunk = first
            while chunk and not self._stopping:
                await response.write(chunk)
                self.stats.audio_ms_served += len(chunk) / (2 * channels) / rate * 1000
                chunk = await queue.get()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._audio_listeners.discard(queue)
        return response

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "frames_published": self.stats.frames_published,
                "frames_served": self.stats.frames_served,
                "browser_frames_shown": self.stats.browser_frames_shown,
                "frame_index": self._frame_index,
                "has_audio": self.has_audio,
                "other_side_avatar": self.other_side_avatar,
                "uptime_s": round(time.monotonic() - self._started, 1),
            }
        )

    async def _report(self, request: web.Request) -> web.Response:
        raw = await request.content.read(1024)
        try:
            msg = untrusted_json(raw)
            frames, width, height = int(msg["frames"]), int(msg["width"]), int(msg["height"])
            sound = [float(msg.get(k, 0.0)) for k in
                     ("audio_ms", "audio_dropped_ms", "audio_lead_ms", "video_delay_ms")]
            gaps = int(msg.get("audio_gaps", 0))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise web.HTTPBadRequest(text="expected {frames, width, height}") from None
        if not all(0.0 <= x < 1e12 for x in sound) or gaps < 0:  # also refuses NaN
            raise web.HTTPBadRequest(text="sound durations and gaps must be 0 or more")
        self.stats.browser_frames_shown = max(self.stats.browser_frames_shown, frames)
        self.stats.browser_size = (width, height)
        (self.stats.browser_audio_ms, self.stats.browser_audio_dropped_ms,
         self.stats.browser_audio_lead_ms, self.stats.browser_video_delay_ms) = sound
        self.stats.browser_audio_gaps = gaps
        return web.json_response({"avatar": self.other_side_avatar})


def square_pixels(rgb: np.ndarray, pixel_aspect: Fraction) -> np.ndarray:
    """A picture of non-square pixels (an anamorphic source's crop) resampled to square
    ones, as it is to be seen: its width times the pixel aspect, its height kept. A browser
    or a window shows every pixel square."""
    if pixel_aspect == 1:
        return rgb
    h, w = rgb.shape[:2]
    width = max(1, round(w * pixel_aspect))
    return cv2.resize(rgb, (width, h), interpolation=cv2.INTER_AREA if width < w
                      else cv2.INTER_LINEAR)


def wav_header(rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header for a stream of unknown length (sizes set to the maximum)."""
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def try_open_window(name: str) -> bool:
    """A desktop window when OpenCV has a GUI backend; opencv-python-headless has none."""
    try:
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)
    except cv2.error:
        print("desktop window unavailable (OpenCV built without GUI); use the browser viewer")
        return False
    return True
