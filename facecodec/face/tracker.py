"""MediaPipe face mesh in tracking mode: 478 3D landmarks (468 + 10 iris) per face."""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from facecodec.errors import FacecodecError

N_LANDMARKS = 478
# What the detectors do not find: MediaPipe's short-range detector (the mesh's own) finds
# faces from 12 % of the picture's width (a face shrunk into 640x480, 1280x720 and 1920x1080
# pictures), not at 10 %; its full-range one (FarFaces) from about 4 % (the GRID clip's face
# in 1920x1080: found in 75 of 75 frames at 5.2 %, 69 of 75 at 3.5 %).
SMALLEST_FACE = 1 / 25  # of the picture's longer side


def small_face_advice(width: int, height: int) -> str:
    """What to say where no face was found in a width x height picture."""
    return (f"a face narrower than about 1/25 of the picture's longer side, here "
            f"{round(SMALLEST_FACE * max(width, height))} px, is not found")
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


def opened(solution: Any) -> Any:
    """`solution` (a MediaPipe solution just made) once its graph is running. MediaPipe opens
    the graph's calculators in its own threads after the constructor returns, and they log to
    file descriptor 2 as they open: one blank picture through it waits for them, in silence."""
    with quiet_stderr():
        solution.process(np.zeros((64, 64, 3), np.uint8))
    return solution


def import_mediapipe() -> ModuleType:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MediaPipe 0.10.14 calls a protobuf function newer protobufs deprecate, on the first
    # picture with a face: a warning its users can do nothing about.
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated",
                            category=UserWarning)
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

    def placed(self, left: float, top: float, scale: float = 1.0) -> Face:
        """This face, found in a part of a picture (at `left`, `top`, resized by `scale`),
        in the whole picture's pixels."""
        points = self.points / scale
        points[:, 0] += left
        points[:, 1] += top
        return Face(points.astype(np.float32))


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
            self._detector = opened(mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=0.3))

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


# A face found by the full-range detector is given to the mesh in a square this many times
# its box's side: the mesh's own detector then sees it as a close-up.
SMALL_FACE_CONTEXT = 3.0
# The mesh is run on such a square at this side at most.
SMALL_FACE_SIDE = 512
FAR_SIDE = 640  # FarFaces gives its detector a part of a picture this large at most
MIN_WINDOW = 16  # pixels a side: a smaller part of a picture is not given to the mesh
FAR_TILES = 3  # parts of a long picture FarFaces looks at, at most


class FarFaces:
    """MediaPipe's full-range face detector: it finds faces the mesh's own short-range
    detector misses, under about 1/8 of the picture's longer side (a person sitting back
    from the camera, a photograph of a whole person): measured from 4-6 % of it. Each is a
    square `SMALL_FACE_CONTEXT` times the face's box, where the mesh sees a close-up."""

    def __init__(self) -> None:
        mp = import_mediapipe()
        with quiet_stderr():
            self._detector = opened(mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5))

    def __call__(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The squares (x0, y0, x1, y1, within the picture) around each face found."""
        h, w = rgb.shape[:2]
        squares: list[tuple[int, int, int, int]] = []
        boxes: list[tuple[float, float, float, float]] = []
        for x0, y0, x1, y1 in far_tiles(w, h):
            # The detector sees 192x192 whatever it is given: a smaller copy loses nothing,
            # and handing it a large picture took 35 ms of a 1920x1080 look.
            tile, _ = shrunk(rgb[y0:y1, x0:x1], FAR_SIDE)
            with quiet_stderr():
                found = self._detector.process(np.ascontiguousarray(tile)).detections or []
            tw, th = x1 - x0, y1 - y0
            for d in found:
                b = d.location_data.relative_bounding_box
                box = (x0 + b.xmin * tw, y0 + b.ymin * th, x0 + (b.xmin + b.width) * tw,
                       y0 + (b.ymin + b.height) * th)
                # Once, where tiles overlap. Told apart by the detections themselves: their
                # squares overlapped enough to merge two faces 1.6 face widths apart.
                if any(iou(box, q) >= 0.3 for q in boxes):
                    continue
                boxes.append(box)
                side = SMALL_FACE_CONTEXT * max(box[2] - box[0], box[3] - box[1])
                squares.append(window_around((box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                                             side, w, h))
        return squares

    def close(self) -> None:
        self._detector.close()


def far_tiles(w: int, h: int) -> list[tuple[int, int, int, int]]:
    """The parts of a w x h picture FarFaces looks at: about square, along its longer
    side, overlapping, at most FAR_TILES (longer parts beyond that). The detector squeezes what
    it is given into a square: a whole 1280x720 picture missed a 7 % face near its side
    that a 720x720 part of it found at 0.81-0.91."""
    long, short = max(w, h), min(w, h)
    n = min(FAR_TILES, math.ceil(long / short - 0.4))  # 4:3 is looked at whole
    if n <= 1:
        return [(0, 0, w, h)]
    # Overlapping by a quarter of the short side, so that no face at the limit lies across
    # a seam (parts that only touched missed a face in the middle of a 2:1 picture).
    part = min(long, max(short, math.ceil((long + (n - 1) * (short // 4)) / n)))
    starts = [round(i * (long - part) / (n - 1)) for i in range(n)]
    return [(a, 0, a + part, h) if w >= h else (0, a, w, a + part) for a in starts]


def shrunk(rgb: np.ndarray, most: int) -> tuple[np.ndarray, float]:
    """`rgb` resized (area-averaged) to `most` pixels on its longer side at most, and the
    scale it was resized by (1: as it is)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, most / max(h, w))
    if scale == 1:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def window_around(cx: float, cy: float, side: float, w: int, h: int
                  ) -> tuple[int, int, int, int]:
    """A square of `side` centred on (cx, cy), moved inside a w x h picture (cut where it
    is larger)."""
    side_x, side_y = min(int(round(side)), w), min(int(round(side)), h)
    x0 = min(max(int(round(cx - side_x / 2)), 0), w - side_x)
    y0 = min(max(int(round(cy - side_y / 2)), 0), h - side_y)
    return x0, y0, x0 + side_x, y0 + side_y


def _middle(square: tuple[int, int, int, int]) -> tuple[float, float]:
    return (square[0] + square[2]) / 2, (square[1] + square[3]) / 2


def mesh_in(mesh: FaceMesh, rgb: np.ndarray, window: tuple[int, int, int, int],
            most: int | None = None) -> list[Face]:
    """The mesh's faces in a part of a picture (resized to `most` pixels a side at most),
    in the whole picture's pixels."""
    x0, y0, x1, y1 = window
    part, scale = (rgb[y0:y1, x0:x1], 1.0) if most is None else shrunk(rgb[y0:y1, x0:x1], most)
    return [f.placed(x0, y0, scale) for f in mesh(np.ascontiguousarray(part))]


def find_small_faces(rgb: np.ndarray, mesh: FaceMesh, far: FarFaces | None = None
                     ) -> list[Face]:
    """Faces too small in a picture for the mesh alone (`FarFaces`), each fitted by the mesh
    in its own square, landmarks in `rgb`'s pixels. A square where the mesh finds no face is
    none: the detector, looking at parts of a picture, also finds faces in a busy
    background."""
    own = far is None
    far = FarFaces() if far is None else far
    try:
        squares = far(rgb)
    finally:
        if own:
            far.close()
    faces: list[Face] = []
    for square in squares:
        if min(square[2] - square[0], square[3] - square[1]) < MIN_WINDOW:
            continue
        near = mesh_in(mesh, rgb, square, SMALL_FACE_SIDE)
        if not near:
            continue
        # The one at the detection's centre: the square may hold part of a neighbour.
        face = min(near, key=lambda f: math.dist(f.centre, _middle(square)))
        if all(iou(face.box, f.box) < 0.3 for f in faces):
            faces.append(face)
    return faces


class FaceMesh:
    """Thin wrapper that returns `Face` values instead of protobufs."""

    def __init__(self, max_faces: int = 1, static: bool = False, min_confidence: float = 0.5):
        mp = import_mediapipe()
        with quiet_stderr():
            self._mesh = opened(mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            ))

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
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


# A face found only by FarFaces is followed in a square this many times its size, moved
# once its centre strays this share of the square's side from the middle.
WINDOW_FACES, WINDOW_STRAY = 4.0, 0.2
# A face wider than this share of the picture's longer side is looked for in the whole
# picture again: the mesh's own detector finds faces from 12 % of it.
NEAR_SHARE = 1 / 6
GROWN_RECHECK_FRAMES = 5  # how often the whole picture is looked at for a face that large
# A far face is taken for one lost when its centre is within this many of the lost face's
# sizes of where that was last seen, and it is at least this share of its size (a person
# stepping back shrinks a little at a time; a stranger far behind a speaker is far smaller).
FAR_SAME_PLACE, FAR_SAME_SIZE = 1.5, 0.5
# A window whose face is lost is kept this many frames, for a face out of view a moment.
WINDOW_PATIENCE_FRAMES = 25
# With no face in view, FarFaces looks every this many frames: a look costs 10-13 ms a
# part (640x480 to 1920x1080, 2 cores; two parts for 16:9), three times the mesh's own (a
# faceless 1280x720 frame took 13 ms instead of 8).
FAR_LOOK_EVERY = 5
# While one face is followed and several are not allowed, the multi-face detector looks
# again every this many frames (about 25 ms a look: 1 ms a frame), so that a person who joins
# mid-way is noticed and said, not only one present at the start.
RECHECK_FRAMES = 30


class FaceTracker:
    """Follows one face through a video.

    Tracking runs MediaPipe with one face (fast: detection only when tracking is lost). A
    second, multi-face detector runs when tracking (re)starts, to notice several people and
    to keep following the same person rather than whoever the tracker locks onto, and (where
    several are not allowed) every RECHECK_FRAMES while it follows one. Where the mesh finds
    no face, FarFaces looks for one too small for it, followed in a window (`_look_far`).
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
        self._far: FarFaces | None = None  # see _far_faces
        self._far_wait = 0  # faceless frames until FarFaces looks again
        # Where a face too small for the mesh's own detector is followed (FarFaces); None:
        # the whole picture.
        self.window: tuple[int, int, int, int] | None = None
        # The picture the meshes see changed (a window taken, moved or left): the tracking
        # mesh's own idea of where the face was is off.
        self._new_window = False
        self._window_frames = 0  # frames followed in a window since the whole picture was seen
        self.windowed = 0  # frames whose face was followed in a window
        self._seen: tuple[Face, int] | None = None  # the last face followed, and its frame

    def _far_faces(self) -> FarFaces:
        """The far detector, made when first needed (most videos never need it)."""
        if self._far is None:
            self._far = FarFaces()
        return self._far

    def _mesh(self, mesh: FaceMesh, rgb: np.ndarray) -> list[Face]:
        return mesh(rgb) if self.window is None else mesh_in(mesh, rgb, self.window)

    def _several(self, n: int, frame_index: int) -> None:
        """The detector saw `n` (> 1) faces: refused before one is followed, unless allowed;
        later, the first such frame is kept."""
        self.several_seen += 1
        if not self.allow_several and not self._started:
            raise FacecodecError(f"{n} faces in frame {frame_index}; facecodec "
                                 f"codes one person{SEVERAL_FACES_ADVICE}")
        if self.joined is None and self._started:
            self.joined = frame_index

    def _acquire(self, rgb: np.ndarray, frame_index: int) -> tuple[Face | None, int]:
        """The face to follow in this frame, and how many faces the detector found."""
        faces = self._mesh(self._detect, rgb)
        self._followed = 0
        if not faces:
            return None, 0
        if len(faces) > 1:
            self._several(len(faces), frame_index)
        last = self._last
        if last is not None:
            return max(faces, key=lambda f: iou(f.box, last.box) + 1e-6 * f.size), len(faces)
        return max(faces, key=lambda f: f.size), len(faces)

    def __call__(self, rgb: np.ndarray, frame_index: int = 0) -> Face | None:
        """The tracked face in this frame, or None when it is not visible."""
        face = self._follow(rgb, frame_index)
        if face is None and self.window is not None:
            # Lost in its window: the whole picture (grown, or moved out). The window is
            # kept a while for a face out of view a moment (a hand, a turn).
            kept, self.window, self._new_window = self.window, None, True
            face = self._follow(rgb, frame_index)
            if (face is None and self._seen is not None
                    and frame_index - self._seen[1] < WINDOW_PATIENCE_FRAMES):
                self.window, self._new_window = kept, True
        if face is None:
            face = self._look_far(rgb, frame_index)
        if face is None:
            return None
        self._far_wait = 0  # the first faceless frame after a face looks far
        if self.window is not None:
            self.windowed += 1
            face = self._keep_window(face, rgb, frame_index)
        self._seen = (face, frame_index)
        return face

    def _look_far(self, rgb: np.ndarray, frame_index: int) -> Face | None:
        """A face too small for the mesh's own detector, followed from now on in a window.
        Once a face has been followed, only one where it was last seen, of about its size,
        is taken (the same person, a little further away): a stranger far behind never
        takes the place of a speaker out of view."""
        if self._far_wait > 0:
            self._far_wait -= 1
            return None
        self._far_wait = FAR_LOOK_EVERY - 1
        h, w = rgb.shape[:2]
        faces = find_small_faces(rgb, self._detect, self._far_faces())
        if len(faces) > 1:
            self._several(len(faces), frame_index)
        if self._seen is not None:
            last = self._seen[0]
            faces = [f for f in faces
                     if math.dist(f.centre, last.centre) < FAR_SAME_PLACE * last.size
                     and f.size > FAR_SAME_SIZE * last.size]
        windows = [window_around(*f.centre, WINDOW_FACES * f.size, w, h)
                   for f in sorted(faces, key=lambda f: -f.size)]
        # A window of the whole picture is where the mesh has just looked.
        windows = [q for q in windows if q != (0, 0, w, h)
                   and min(q[2] - q[0], q[3] - q[1]) >= MIN_WINDOW]
        if not windows:
            return None
        kept = self.window
        self.window, self._new_window, self._window_frames = windows[0], True, 0
        face = self._follow(rgb, frame_index)
        if face is None:
            self.window = kept
        return face

    def _keep_window(self, face: Face, rgb: np.ndarray, frame_index: int) -> Face:
        """Keep the window about the face (moved when the face strays from its middle or its
        size changes). Every RECHECK_FRAMES, and often once the face has grown, the whole
        picture is looked at: the mesh finding our face there takes it out of the window,
        and another face, near or far, is counted as the whole-picture tracker counts it."""
        assert self.window is not None
        h, w = rgb.shape[:2]
        self._window_frames += 1
        grown = face.size > NEAR_SHARE * max(w, h)
        if self._window_frames >= (GROWN_RECHECK_FRAMES if grown else RECHECK_FRAMES):
            self._window_frames = 0
            near = self._detect(rgb)
            ours = [f for f in near if iou(f.box, face.box) > 0.3]
            if not self.allow_several:  # counted as the whole-picture tracker's rechecks count
                others = max(len(near) - len(ours), sum(
                    iou(f.box, face.box) < 0.3
                    for f in find_small_faces(rgb, self._detect, self._far_faces())))
                if others:
                    self._several(others + 1, frame_index)
            if ours:
                self.window, self._new_window, self._window_frames = None, True, 0
                self._last = ours[0]
                return ours[0]
        x0, y0, x1, y1 = self.window
        side = max(x1 - x0, y1 - y0)
        want = WINDOW_FACES * face.size
        cx, cy = face.centre
        stray = max(abs(cx - (x0 + x1) / 2), abs(cy - (y0 + y1) / 2))
        if stray < WINDOW_STRAY * side and want / 1.5 < side < want * 1.5:
            return face
        window = window_around(cx, cy, want, w, h)
        if window != self.window and min(window[2] - window[0], window[3] - window[1]) >= (
                MIN_WINDOW):
            # A window of the whole picture stays one until the mesh finds the face there.
            self.window, self._new_window = window, True
        return face

    def _follow(self, rgb: np.ndarray, frame_index: int) -> Face | None:
        """The face in this frame, where the tracker last followed it or found afresh."""
        last = self._last
        tracked = self._mesh(self._track, rgb)
        # In a window just taken, moved or left, the detector is asked, as at a start.
        fresh, self._new_window = self._new_window, False
        if not fresh and last is not None and tracked and iou(tracked[0].box, last.box) > 0.3:
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
        """Run both meshes and the far detector once on a faceless picture: their first
        pass sets up the models (20-60 ms each), and finding no face leaves the tracking
        state as it was."""
        grey = np.full((height, width, 3), 128, np.uint8)
        self._detect(grey)
        self._track(grey)
        self._far_faces()(grey)  # its first look would otherwise cost about 60 ms mid-call

    def close(self) -> None:
        self._track.close()
        self._detect.close()
        if self._far is not None:
            self._far.close()
