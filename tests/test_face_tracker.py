"""Following a face too small for the face mesh's own detector (a person sitting back from
a wide camera): MediaPipe's full-range detector finds it, and the mesh follows it in a window
about it, to the landmarks the close-up gives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import GRID_CLIP, require

from facecodec.capture.video import read_frames
from facecodec.errors import FacecodecError
from facecodec.face.tracker import RECHECK_FRAMES, FaceTracker

WIDE = (1080, 1920)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(read_frames(require(GRID_CLIP)))  # its face about 112 px wide


@pytest.fixture(scope="module")
def close_points(frames: list[np.ndarray]) -> list[np.ndarray]:
    tracker = FaceTracker()
    try:
        faces = [tracker(f, i) for i, f in enumerate(frames)]
    finally:
        tracker.close()
    assert all(f is not None for f in faces)
    return [f.points[:, :2] for f in faces if f is not None]


def _far(frame: np.ndarray, scale: float, x: int, y: int = 300) -> np.ndarray:
    """The frame shrunk or grown by `scale` at (x, y) in a wide grey picture."""
    small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((*WIDE, 3), 90, np.uint8)
    h, w = min(small.shape[0], WIDE[0] - y), min(small.shape[1], WIDE[1] - x)
    canvas[y:y + h, x:x + w] = small[:h, :w]
    return canvas


def test_a_face_too_small_for_the_mesh_is_followed_in_a_window(
    frames: list[np.ndarray], close_points: list[np.ndarray]
) -> None:
    """At 1.3 times its size in 1920x1080 the face is 7.5 % of the width: the mesh alone
    found it in none of the 75 frames. Moving 10 px a frame, it is found in all, within
    about a pixel of where the mesh puts it in the clip itself."""
    scale = 1.3
    tracker = FaceTracker()
    errors = []
    try:
        for i, frame in enumerate(frames):
            x = 900 + int(200 * np.sin(i / 20))
            face = tracker(_far(frame, scale, x), i)
            assert face is not None, i
            back = (face.points[:, :2] - [x, 300]) / scale
            errors.append(float(np.median(np.linalg.norm(back - close_points[i], axis=1))))
        assert tracker.windowed == len(frames)
    finally:
        tracker.close()
    assert np.median(errors) < 1.2 and max(errors) < 3.0, errors  # measured 0.69 and 1.56


def test_a_face_that_comes_closer_leaves_its_window(frames: list[np.ndarray]) -> None:
    """A face growing from 6 % to 19 % of the width is found in every frame; once it is
    large enough for the mesh in the whole picture, the window goes."""
    tracker = FaceTracker()
    try:
        for i, frame in enumerate(frames):
            scale = 1.0 + 2.2 * i / (len(frames) - 1)
            assert tracker(_far(frame, scale, 700), i) is not None, i
        assert 0 < tracker.windowed < len(frames) and tracker.window is None
    finally:
        tracker.close()


def test_two_small_faces_are_two_faces(frames: list[np.ndarray]) -> None:
    """Found far, several people are refused as they are near, unless allowed."""
    picture = _far(frames[0], 1.3, 300)
    picture[:, 1100:] = _far(frames[0], 1.3, 1300)[:, 1100:]
    tracker = FaceTracker()
    try:
        with pytest.raises(FacecodecError, match="2 faces in frame 0"):
            tracker(picture, 0)
    finally:
        tracker.close()
    tracker = FaceTracker(allow_several=True)
    try:
        assert tracker(picture, 0) is not None and tracker.several_seen == 1
    finally:
        tracker.close()


def _speaker_and_stranger(frames: list[np.ndarray], i: int, hidden: range) -> np.ndarray:
    """A speaker near the camera (17 % of 1280x720) and a stranger far behind (5 %); the
    speaker out of view in the frames `hidden`."""
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    if i not in hidden:
        near = cv2.resize(frames[i % len(frames)], None, fx=2.0, fy=2.0,
                          interpolation=cv2.INTER_LINEAR)
        canvas[60:60 + near.shape[0], 100:100 + near.shape[1]] = near
    far = cv2.resize(frames[(i + 30) % len(frames)], None, fx=0.6, fy=0.6,
                     interpolation=cv2.INTER_AREA)
    canvas[200:200 + far.shape[0], 1000:1000 + far.shape[1]] = far
    return canvas


@pytest.mark.parametrize("hidden, stranger", [(range(20, 25), []), (range(20, 60), [50, 55])],
                         ids=["a-moment", "a-while"])
def test_a_stranger_far_behind_does_not_take_the_speakers_place(
    frames: list[np.ndarray], hidden: range, stranger: list[int]
) -> None:
    """A speaker out of view for a moment (a hand, a turn) is waited for: the face far
    behind is not taken in their place (the first version took it and, looking only in
    its window, never saw the speaker again). Out of view for longer, the far face is
    followed, and the speaker again once back: a face near the camera goes first."""
    tracker = FaceTracker(allow_several=True)
    where: list[float | None] = []
    try:
        for i in range(2 * len(frames)):  # the clip twice
            face = tracker(_speaker_and_stranger(frames, i, hidden), i)
            where.append(None if face is None else face.centre[0])
    finally:
        tracker.close()
    back = hidden.stop if not stranger else hidden.stop + RECHECK_FRAMES + 1
    for i, x in enumerate(where):
        if i in stranger:
            assert x is not None and x > 1000, (i, where)
        elif i < hidden.start or i >= back:
            assert x is not None and x < 700, (i, where)  # the speaker
    assert all(where[i] is None for i in hidden[:5])


def test_an_upright_picture_keeps_its_small_face(frames: list[np.ndarray]) -> None:
    """In a 1080x1920 picture the mesh's own detector needs the face at 12 % of the longer
    side: a face a fifth of the width was taken out of its window, lost, and found again
    by turns (45 of 75 frames lost)."""
    tracker = FaceTracker()
    try:
        for i, frame in enumerate(frames):
            canvas = np.full((1920, 1080, 3), 90, np.uint8)
            near = cv2.resize(frame, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
            canvas[700:700 + near.shape[0], 200:200 + near.shape[1]] = near
            assert tracker(canvas, i) is not None, i
        assert tracker.windowed == len(frames)
    finally:
        tracker.close()


def test_a_small_face_out_of_view_for_a_frame_is_found_again_the_next(
    frames: list[np.ndarray]
) -> None:
    tracker = FaceTracker()
    try:
        found = [tracker(_far(f, 1.3, 900) if i != 30 else _far(f, 1.3, 900) * 0 + 90, i)
                 is not None for i, f in enumerate(frames)]
    finally:
        tracker.close()
    assert [i for i, ok in enumerate(found) if not ok] == [30]
