"""MediaPipe face mesh in tracking mode: 478 3D landmarks (468 + 10 iris) per face."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from facecodec.errors import FacecodecError

N_LANDMARKS = 478
# What the detector does not find (MediaPipe's short-range detector, measured on a face
# shrunk into 640x480, 1280x720 and 1920x1080 pictures: found from 12 % of the width, not at
# 10 %): said where no face was found.
SMALL_FACE_ADVICE = ("a face narrower than about 1/8 of the picture is not found: cut the "
                     "video closer around it")
# The encoder's way out of several faces, which commands without `--face` leave out.
SEVERAL_FACES_ADVICE = " (use --face largest to code the largest face)"


def without_face_advice(message: str) -> str:
    """`message` without the encoder's advice, for a command that has no --face."""
    return message.replace(SEVERAL_FACES_ADVICE, "")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """MediaPipe's C++ side prints start-up chatter straight to file descriptor 2; a codec's
    command line should print only its own one-line messages."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_mediapipe() -> ModuleType:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with quiet_stderr():
            import mediapipe as mp
    except ImportError as e:  # pragma: no cover - install problem
        raise FacecodecError("mediapipe==0.10.14 is not installed (run `make`)") from e
    return mp


@dataclass(frozen=True)
class Face:
    """Landmarks of one face in pixel units of the image they were found in.

    x, y are pixels; z uses the same scale as x (MediaPipe's convention), origin near the
    face centre, smaller is closer to the camera.
    """

    points: np.ndarray  # (478, 3) float32

    @property
    def box(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of the 2D landmark bounding box."""
        p = self.points
        lo, hi = p[:, :2].min(axis=0), p[:, :2].max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def size(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceCheck:
    """How sure MediaPipe's short-range face detector is that a face the mesh found is one:
    it looks at the face's box, doubled, alone. The mesh fits a face to whatever it is given
    (the background of an upside-down photograph, a face on its side): the detector tells
    a standing face from those (on the 15 shared portraits at each quarter turn: 0.89 and
    more against at most 0.74)."""

    def __init__(self) -> None:
        mp = import_mediapipe()
        with quiet_stderr():
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=0.3)

    def __call__(self, rgb: np.ndarray, face: Face) -> float:
        x0, y0, x1, y1 = face.box
        half = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = max(0, int(cx - half)), max(0, int(cy - half))
        crop = np.ascontiguousarray(rgb[top:int(cy + half), left:int(cx + half)])
        if min(crop.shape[:2]) < 2:
            return 0.0
        with quiet_stderr():
            found = self._detector.process(crop)
        return max((d.score[0] for d in found.detections or []), default=0.0)

    def close(self) -> None:
        self._detector.close()


class FaceMesh:
    """Thin wrapper that returns `Face` values instead of protobufs."""

    def __init__(self, max_faces: int = 1, static: bool = False, min_confidence: float = 0.5):
        mp = import_mediapipe()
        self._warm = False
        with quiet_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        if not self._warm:  # the first call prints more chatter
            with quiet_stderr():
                res = self._mesh.process(np.ascontiguousarray(rgb))
            self._warm = True
        else:
            res = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for lm in res.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float32)
            if a.shape[0] != N_LANDMARKS:
                continue
            a[:, 0] *= w
            a[:, 1] *= h
            a[:, 2] *= w
            faces.append(Face(a))
        return faces

    def close(self) -> None:
        self._mesh.close()


# While one face is followed and several are not allowed, the multi-face detector looks
# again every this many frames (about 25 ms a look: 1 ms a frame), so that a person who joins
# mid-way is noticed and said, not only one present at the start.
RECHECK_FRAMES = 30


class FaceTracker:
    """Follows one face through a video.

    Tracking runs MediaPipe with one face (fast: detection only when tracking is lost). A
    second, multi-face detector runs when tracking (re)starts, to notice several people and
    to keep following the same person rather than whoever the tracker locks onto, and (where
    several are not allowed) every RECHECK_FRAMES while it follows one.
    """

    def __init__(self, allow_several: bool = False, max_faces: int = 4):
        self.allow_several = allow_several
        self._track = FaceMesh(max_faces=1)
        self._detect = FaceMesh(max_faces=max_faces, static=True)
        self._last: Face | None = None
        self._started = False
        self._followed = 0  # frames followed since the detector last looked
        self.several_seen = 0  # detector looks (at (re)acquisition or a recheck) finding several
        self.joined: int | None = None  # the first frame where another face was seen later

    def _acquire(self, rgb: np.ndarray, frame_index: int) -> tuple[Face | None, int]:
        """The face to follow in this frame, and how many faces the detector found."""
        faces = self._detect(rgb)
        self._followed = 0
        if not faces:
            return None, 0
        if len(faces) > 1:
            self.several_seen += 1
            if not self.allow_several and not self._started:
                raise FacecodecError(f"{len(faces)} faces in frame {frame_index}; facecodec "
                                     f"codes one person{SEVERAL_FACES_ADVICE}")
            if self.joined is None and self._started:
                self.joined = frame_index
        last = self._last
        if last is not None:
            return max(faces, key=lambda f: iou(f.box, last.box) + 1e-6 * f.size), len(faces)
        return max(faces, key=lambda f: f.size), len(faces)

    def __call__(self, rgb: np.ndarray, frame_index: int = 0) -> Face | None:
        """The tracked face in this frame, or None when it is not visible."""
        last = self._last
        tracked = self._track(rgb)
        if last is not None and tracked and iou(tracked[0].box, last.box) > 0.3:
            self._last = tracked[0]
            self._followed += 1
            if not self.allow_several and self._followed >= RECHECK_FRAMES:
                self._acquire(rgb, frame_index)  # counts another face; ours is followed
            return self._last
        # (Re)acquisition, or the tracker jumped to somebody else: look for our face. The
        # only face in the picture is ours however far it moved (a camera swung, a cut).
        face, found = self._acquire(rgb, frame_index)
        if face is not None and (last is None or found == 1 or iou(face.box, last.box) > 0.1):
            if tracked and iou(tracked[0].box, face.box) > 0.5:
                face = tracked[0]  # same face; the tracker's landmarks are temporally smoother
            self._last = face
            self._started = True
            return face
        self._last = None  # lost: the next frame looks for a face afresh
        return None

    def warm_up(self, width: int, height: int) -> None:
        """Run both meshes once on a faceless picture: their first pass sets up the models
        (20-30 ms each), and finding no face leaves the tracking state as it was."""
        grey = np.full((height, width, 3), 128, np.uint8)
        self._detect(grey)
        self._track(grey)

    def close(self) -> None:
        self._track.close()
        self._detect.close()
