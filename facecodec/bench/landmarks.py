"""MediaPipe face-mesh landmarks for the bench (crop protocol, AKD, temporal jitter).

The bench keeps its own thin wrapper rather than the sender's tracker so that its numbers
stay comparable with BASELINES.md whatever the sender's tracking turns into.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

N_LANDMARKS = 478  # 468 mesh points + 10 iris points with refine_landmarks=True
# Mesh indices: the inner lips' middles, the mouth's inner corners, the nose tip, and two
# points at each eye's corners.
UPPER_LIP, LOWER_LIP, MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP = 13, 14, 78, 308, 1
EYE_CORNERS = ((33, 133), (362, 263))


def track_landmarks(frames: Iterable[np.ndarray], static: bool = False) -> np.ndarray:
    """Pixel (x, y) of the 478 landmarks per RGB frame: [T, 478, 2] float32, NaN where no face.

    Tracking mode (static=False) follows the BASELINES protocol: the detector runs only when
    the tracker loses the face, which is both faster and steadier than per-frame detection.
    """
    # Heavy import, only when landmarks are needed; MediaPipe's start-up chatter is kept off
    # the bench's own lines.
    from facecodec.face.tracker import import_mediapipe, opened, quiet_stderr

    mp = import_mediapipe()
    out: list[np.ndarray] = []
    with quiet_stderr():
        mesh = opened(mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        ))
    with mesh:
        for frame in frames:
            rgb = np.ascontiguousarray(frame)
            h, w = rgb.shape[:2]
            res = mesh.process(rgb)
            if not res.multi_face_landmarks:
                out.append(np.full((N_LANDMARKS, 2), np.nan, np.float32))
                continue
            lm = res.multi_face_landmarks[0].landmark
            pts = np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float32)
            out.append(pts)
    if not out:
        return np.zeros((0, N_LANDMARKS, 2), np.float32)
    return np.stack(out)


def mouth_and_turn(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of landmarks [T, 478, 2]: the mouth's opening over its width, and the head's
    sideways turn as the nose tip's offset from the eyes' midpoint over the eyes' distance
    (0 facing the camera); NaN where no face. Scale-free, so frames of different faces and
    crops compare."""
    width = np.linalg.norm(lm[:, MOUTH_RIGHT] - lm[:, MOUTH_LEFT], axis=1)
    opening = np.linalg.norm(lm[:, LOWER_LIP] - lm[:, UPPER_LIP], axis=1) / width
    left, right = (lm[:, list(eye)].mean(axis=1) for eye in EYE_CORNERS)
    across = right - left
    turn = np.sum((lm[:, NOSE_TIP] - (left + right) / 2) * across, axis=1) / np.sum(
        across * across, axis=1)
    return opening, turn


def tilt(lm: np.ndarray) -> np.ndarray:
    """Per frame of landmarks [T, 478, 2]: the head's tilt in the picture (roll), the angle in
    degrees of the line through the eyes (0 level); NaN where no face."""
    left, right = (lm[:, list(eye)].mean(axis=1) for eye in EYE_CORNERS)
    across = right - left
    return np.degrees(np.arctan2(across[:, 1], across[:, 0]))
