"""The browser viewer: HTTP endpoints directly, and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from facecodec.stream.browser import devtools, find_chromium, headless_chromium
from facecodec.stream.viewer import BOUNDARY, Viewer, wav_header

CHROMIUM = find_chromium()


def frame(i: int) -> np.ndarray:
    rgb = np.zeros((64, 48, 3), np.uint8)
    rgb[..., 0] = (i * 40) % 256
    rgb[: i % 64, :, 1] = 255
    return rgb


def sound(level: int) -> av.AudioFrame:
    """20 ms of 48 kHz stereo s16 at a constant `level`, as the call's peer hands it on."""
    pcm = av.AudioFrame.from_ndarray(np.full((1, 960 * 2), level, np.int16), format="s16",
                                     layout="stereo")
    pcm.sample_rate = 48000
    return pcm


async def play_sound(profile: Path) -> None:
    """Press the page's Play audio once the page has loaded (Chromium started with
    --remote-debugging-port=0 and no gesture needed for sound)."""
    click = ("document.readyState === 'complete' && "
             "(document.getElementById('play-audio').click(), actx !== null)")
    deadline = time.monotonic() + 30
    while not (await devtools(profile, "Runtime.evaluate",
                              {"expression": click}))["result"].get("value"):
        assert time.monotonic() < deadline, "the page never loaded"
        await asyncio.sleep(0.2)


def test_wav_header_layout() -> None:
    head = wav_header(48000, 2)
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and head[36:40] == b"data"
    fmt = struct.unpack("<IHHIIHH", head[16:36])
    assert fmt == (16, 1, 2, 48000, 192000, 4, 16)


def test_endpoints_serve_frames_audio_and_reject_bad_reports() -> None:
    async def main() -> None:
        viewer = Viewer(title="t")
        url = await viewer.start()
        try:
            async with aiohttp.ClientSession() as http:
                page = await (await http.get(url)).text()
                assert "Play audio" in page and "stream.mjpg" in page
                with pytest.raises(ValueError):
                    await viewer.publish_frame(np.zeros((4, 4), np.uint8), 0)
                mjpeg = await http.get(url + "stream.mjpg")
                assert BOUNDARY in mjpeg.headers["Content-Type"]
                for i in range(3):
                    await viewer.publish_frame(frame(i), i)
                    await asyncio.sleep(0.05)
                body = b""
                while body.count(b"\xff\xd9") < 3:  # three complete JPEGs
                    chunk = await asyncio.wait_for(mjpeg.content.read(65536), 5)
                    assert chunk, "stream ended early"
                    body += chunk
                assert body.startswith(f"--{BOUNDARY}".encode()) and body.count(b"\xff\xd8") >= 3
                mjpeg.close()

                audio = await http.get(url + "audio.wav")
                await asyncio.sleep(0.05)
                viewer.publish_audio(sound(1000))
                data = await asyncio.wait_for(audio.content.readexactly(44 + 3840), 5)
                assert data[:44] == wav_header(48000, 2)
                assert np.all(np.frombuffer(data[44:], "<i2") == 1000)
                audio.close()

                bad = await http.post(url + "report", data=b"{nope")
                assert bad.status == 400
                ok = await http.post(
                    url + "report", data=b'{"frames": 4, "width": 48, "height": 64}'
                )
                assert ok.status == 200 and viewer.stats.browser_frames_shown == 4
                # The answer says whether the other side is an avatar, for the page to say.
                assert await ok.json() == {"avatar": False} and 'id="who" hidden' in page
                viewer.other_side_avatar = True
                again = await http.post(
                    url + "report", data=b'{"frames": 4, "width": 48, "height": 64}')
                assert await again.json() == {"avatar": True}
                for field in (b'"audio_ms": -5', b'"audio_lead_ms": NaN', b'"audio_gaps": -1',
                              b'"audio_ms": "x"', b'"audio_gaps": 1e400'):
                    bad = await http.post(url + "report", data=b'{"frames": 5, "width": 48, '
                                          b'"height": 64, ' + field + b"}")
                    assert bad.status == 400, field
                ok = await http.post(url + "report", data=b'{"frames": 5, "width": 48, '
                                     b'"height": 64, "audio_ms": 1500, "audio_lead_ms": 80, '
                                     b'"audio_gaps": 2}')
                assert ok.status == 200 and viewer.stats.browser_audio_ms == 1500
                assert viewer.stats.browser_audio_lead_ms == 80
                assert viewer.stats.browser_audio_gaps == 2
                assert viewer.stats.browser_frames_shown == 5
                status = await (await http.get(url + "status")).json()
                assert status["frames_published"] == 3 and status["frame_index"] == 2
                assert status["other_side_avatar"] is True
        finally:
            await viewer.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_self_view_serves_the_face_this_side_sends() -> None:
    async def main() -> None:
        for sends in (True, False):
            viewer = Viewer(self_view=sends)
            url = await viewer.start()
            try:
                async with aiohttp.ClientSession() as http:
                    page = await (await http.get(url)).text()
                    assert ('src="/self.mjpg"' in page) == sends
                    own = await http.get(url + "self.mjpg")
                    if not sends:
                        assert own.status == 404
                        continue
                    for i in range(2):
                        await viewer.publish_self(frame(i), i)
                        await asyncio.sleep(0.05)
                    body = b""
                    while body.count(b"\xff\xd9") < 2:
                        chunk = await asyncio.wait_for(own.content.read(65536), 5)
                        assert chunk, "stream ended early"
                        body += chunk
                    own.close()
                    # Its own stream: the remote picture's counters are untouched.
                    assert viewer.stats.frames_published == viewer.stats.frames_served == 0
            finally:
                await viewer.stop()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_silent_call_says_so() -> None:
    async def main() -> None:
        viewer = Viewer(has_audio=False)
        url = await viewer.start()
        try:
            async with aiohttp.ClientSession() as http:
                assert "carries no audio" in await (await http.get(url)).text()
                assert (await http.get(url + "audio.wav")).status == 404
        finally:
            await viewer.stop()

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium_shows_frames() -> None:
    async def main() -> None:
        viewer = Viewer()
        url = await viewer.start()
        try:
            with headless_chromium(url) as (browser, _):
                deadline = time.monotonic() + 30
                i = 0
                # Publish at 25 fps until the page reports it has decoded and shown 10 frames.
                while viewer.stats.browser_frames_shown < 10 and time.monotonic() < deadline:
                    assert browser.poll() is None, "chromium exited early"
                    await viewer.publish_frame(frame(i), i)
                    i += 1
                    await asyncio.sleep(0.04)
            assert viewer.stats.browser_frames_shown >= 10, viewer.stats
            assert viewer.stats.browser_size == (48, 64)
            assert viewer.stats.browser_video_delay_ms == 0  # no sound playing: no wait
            assert viewer.stats.frames_served >= 10
        finally:
            await viewer.stop()

    asyncio.run(main())


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium_shows_the_self_view() -> None:
    """The small picture of the face a side sends is a plain <img> on /self.mjpg: Chromium
    shows its pictures (their size read back from the page) beside the other side's."""
    own = np.full((40, 56, 3), 128, np.uint8)  # another size than the other side's frames

    async def main() -> None:
        viewer = Viewer(self_view=True)
        url = await viewer.start()
        try:
            with headless_chromium(url, "--remote-debugging-port=0") as (browser, profile):
                deadline = time.monotonic() + 30
                size = None
                i = 0
                while ((size != [56, 40] or viewer.stats.browser_frames_shown < 10)
                       and time.monotonic() < deadline):
                    assert browser.poll() is None, "chromium exited early"
                    await viewer.publish_frame(frame(i), i)
                    await viewer.publish_self(own, i)
                    i += 1
                    await asyncio.sleep(0.04)
                    if i % 10 == 0:
                        size = (await devtools(profile, "Runtime.evaluate", {
                            "expression": "(e => [e.naturalWidth, e.naturalHeight])"
                                          "(document.getElementById('self'))",
                            "returnByValue": True}))["result"].get("value")
            assert size == [56, 40], size
            assert viewer.stats.browser_frames_shown >= 10  # the other side's still plays
        finally:
            await viewer.stop()

    asyncio.run(main())


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_page_plays_the_sound_close_behind_its_arrival() -> None:
    """The page plays the live sound through Web Audio, scheduled a lead ahead of its
    speaker: what it has played out trails what the viewer served by the lead, not the
    second and more an <audio> element buffers a stream for (1.27 s in this Chromium); and
    while it plays, each picture waits as long as the sound does."""
    async def main() -> None:
        viewer = Viewer()
        url = await viewer.start()
        try:
            with headless_chromium(url, "--remote-debugging-port=0",
                                   "--autoplay-policy=no-user-gesture-required") as (_, profile):
                await play_sound(profile)
                lags, waits = [], []
                start, i = time.monotonic(), 0
                while time.monotonic() - start < 6:  # 20 ms frames in real time
                    while i * 0.02 < time.monotonic() - start:
                        viewer.publish_audio(sound(1000 * (i % 3)))
                        i += 1
                        if i % 2 == 0:  # 25 fps of pictures beside the sound
                            await viewer.publish_frame(frame(i // 2), i // 2)
                    if i % 25 == 0 and viewer.stats.audio_ms_served > 1000:
                        served = viewer.stats.audio_ms_served
                        played, queued, wait = json.loads((await devtools(
                            profile, "Runtime.evaluate", {"expression": "JSON.stringify(["
                            "(scheduled - lead() + dropped) * 1000, lead() * 1000, "
                            "soundDelay() * 1000])"}))["result"]["value"])
                        lags.append(served - played)
                        waits.append(wait - queued)
                    await asyncio.sleep(0.005)
            assert len(lags) >= 5, lags
            assert viewer.stats.browser_audio_ms > 2000, viewer.stats
            assert 0 < np.median(lags) < 250, lags
            # The pictures were shown, each held as long as the sound waits: its queue and
            # the output's latency.
            assert viewer.stats.browser_frames_shown > 50, viewer.stats
            assert 0 <= min(waits) and max(waits) < 200, waits
        finally:
            await viewer.stop()

    asyncio.run(main())


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_page_frees_the_frames_it_no_longer_shows() -> None:
    """Frames that come together replace one another before they load: the page frees each
    one it will not show, as well as each one it no longer shows, so a long call's page holds
    one or two frames, not every frame that ever came in a burst."""
    async def main() -> None:
        viewer = Viewer()
        url = await viewer.start()
        try:
            with headless_chromium(url, "--remote-debugging-port=0") as (_, profile):
                deadline = time.monotonic() + 30
                while not viewer.stats.frames_served:
                    assert time.monotonic() < deadline, "the page never asked for frames"
                    await viewer.publish_frame(frame(0), 0)
                    await asyncio.sleep(0.1)
                for i in range(1, 301):  # in bursts: several frames to a read of the stream
                    await viewer.publish_frame(frame(i), i)
                    await asyncio.sleep(0.001 if i % 10 else 0.05)
                await asyncio.sleep(1.0)
                shown, blobs = json.loads((await devtools(profile, "Runtime.evaluate", {
                    "expression": "JSON.stringify([shown, blobs])"}))["result"]["value"])
            assert viewer.stats.frames_served > 100
            assert 0 < shown < viewer.stats.frames_served  # some were replaced unseen
            assert 1 <= blobs <= 2, (shown, blobs)
        finally:
            await viewer.stop()

    asyncio.run(main())


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_a_burst_of_sound_does_not_leave_the_page_behind() -> None:
    """Sound that comes in a burst (after a stall of the link) queues up in the page; the
    page leaves out quiet pieces until its queue is back near its aim, so the sound, and
    the frames that wait for it, do not stay late for the rest of the call."""
    async def main() -> None:
        viewer = Viewer()
        url = await viewer.start()

        async def queued() -> float:
            return float((await devtools(profile, "Runtime.evaluate", {
                "expression": "lead() * 1000"}))["result"]["value"])

        try:
            with headless_chromium(url, "--remote-debugging-port=0",
                                   "--autoplay-policy=no-user-gesture-required") as (_, profile):
                await play_sound(profile)

                async def real_time(seconds: float, first: int) -> None:
                    start = time.monotonic()
                    i = 0
                    while time.monotonic() - start < seconds:
                        while i * 0.02 < time.monotonic() - start:
                            viewer.publish_audio(sound(3000 if (first + i) % 4 else 0))  # pauses
                            i += 1
                        await asyncio.sleep(0.005)

                await real_time(2.0, 0)
                before = await queued()
                for _ in range(6):  # 120 ms of sound at once
                    viewer.publish_audio(sound(3000))
                await asyncio.sleep(0.02)  # on its way to the page
                burst = await queued()
                await real_time(3.0, 1)
                after = await queued()
            assert before < 150 and burst > before + 60, (before, burst)
            assert after < 150, (before, burst, after)
        finally:
            await viewer.stop()

    asyncio.run(main())
