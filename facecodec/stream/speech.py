"""Silence suppression for a call's sound: no packets while nobody speaks.

Every Opus packet costs some 64 bytes of IP, UDP, RTP and SRTP headers, and Opus codes
silence at a third of its speech rate, so a side that says nothing (no microphone, a clip
without sound, a listener) still put 39 kbps on the wire, more than its pictures. As
WebRTC's discontinuous transmission does, the sender leaves out the packets of frames
without speech, and the receiver plays silence in their place.

- `SpeechGate` (sender): WebRTC's voice activity detector (webrtcvad) on each 20 ms of the
  frames Opus codes, held open for `HANGOVER_MS` after the last speech so word endings and
  short pauses go out whole.
- `SoundTimeline` (receiver): hands the call's sound on as a continuous stream in real
  time, silence where no packet came, so a player that plays what it is given (the
  viewer's live WAV) neither stalls nor falls behind during the pauses.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import numpy as np
import webrtcvad

from facecodec.capture.microphone import FRAME, RATE

VAD_FRAME = FRAME  # 20 ms: webrtcvad takes 10, 20 or 30 ms frames
# 1 of webrtcvad's 0..3 (3 leaves out the most). With the hangover, on the 53 shared clips
# whose sound is speech it sent 97.7 % of the 20 ms frames (79 % at least), and none of the
# 9 whose sound track is silent.
VAD_MODE = 1
# Quieter than this is no speech, whatever the detector says: after speech it keeps
# reporting it for up to 420 ms of digital silence (a clip's sound track ending).
FLOOR_DBFS = -60.0
HANGOVER_MS = 200
# aiortc's receiver keeps the last 4 sound packets until a later one comes (its jitter
# buffer's prefetch): those must be silence, or a word's end is heard at the next one's start.
RECEIVER_HELD_PACKETS = 4


class SpeechGate:
    """Whether each coded frame of 48 kHz s16 sound is worth sending."""

    def __init__(self, frame_ms: int, mode: int = VAD_MODE) -> None:
        self._vad = webrtcvad.Vad(mode)
        hangover_ms = max(HANGOVER_MS, (RECEIVER_HELD_PACKETS + 1) * frame_ms)
        self._hangover = -(-hangover_ms // frame_ms)  # in frames, rounded up
        self._quiet = self._hangover + 1  # frames since the last speech: the call starts quiet
        self.frames = 0
        self.sent = 0

    def __call__(self, frame: av.AudioFrame) -> bool:
        """frame: packed s16 at 48 kHz (what aiortc's Opus encoder codes)."""
        channels = len(frame.layout.channels)
        mono = frame.to_ndarray().reshape(-1, channels).mean(axis=1).astype(np.int16)
        rms = float(np.sqrt(np.mean(mono.astype(np.float64) ** 2)))
        speech = 20 * np.log10(max(rms, 1e-3) / 32768) >= FLOOR_DBFS and any(
            self._vad.is_speech(mono[i : i + VAD_FRAME].tobytes(), RATE)
            for i in range(0, mono.size - VAD_FRAME + 1, VAD_FRAME)
        )
        self._quiet = 0 if speech else self._quiet + 1
        send = self._quiet <= self._hangover
        self.frames += 1
        self.sent += send
        return send


class SoundTimeline:
    """Received sound frames, made a continuous real-time stream for `publish`.

    Frames are placed by their RTP timestamps (`pts`, in 1/48000 s). Once a frame is a whole
    frame overdue, silence continues the stream, one frame per frame's time; a frame whose
    time that silence has already covered is left out (the receiver's held packets, which
    the sender's hangover makes silent), and a gap before a frame is filled with silence so
    each frame plays where it belongs.
    """

    def __init__(self, publish: Callable[[av.AudioFrame], None]) -> None:
        self._publish = publish
        self._template: av.AudioFrame | None = None
        self._next_pts = 0  # the stream's position, in samples
        self._due = 0.0  # when (time.monotonic) the frame at _next_pts is due
        self.filled = 0  # silent frames made
        self.dropped = 0  # frames left out

    def frame(self, frame: av.AudioFrame, now: float) -> None:
        pts = self._next_pts if frame.pts is None else frame.pts
        if self._template is not None:
            if pts + frame.samples <= self._next_pts - frame.samples:
                self.dropped += 1  # silence already stood in for it
                return
            while pts - self._next_pts >= self._template.samples:
                self._fill()
        self._template = frame
        self._publish(frame)
        self._next_pts = max(self._next_pts, pts + frame.samples)
        self._due = now + frame.samples / RATE

    def tick(self, now: float) -> None:
        """Continue the stream with silence up to a frame before `now`."""
        if self._template is None:
            return  # nothing heard yet: no format to continue
        step = self._template.samples / RATE
        while self._due + step <= now:
            self._fill()
            self._due += step

    def _fill(self) -> None:
        assert self._template is not None
        template = self._template
        silence = av.AudioFrame.from_ndarray(
            np.zeros_like(template.to_ndarray()), format=template.format.name,
            layout=template.layout.name)
        silence.sample_rate = template.sample_rate
        silence.pts = self._next_pts
        silence.time_base = template.time_base
        self._next_pts += template.samples
        self.filled += 1
        self._publish(silence)
