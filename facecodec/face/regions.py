"""Named landmark index sets of the MediaPipe face mesh that the motion model relies on.

"Left" and "right" are the subject's own (MediaPipe's convention): the subject's left eye
appears on the image's right.
"""

from __future__ import annotations

import numpy as np

N_MESH = 468  # landmarks without the iris refinement
RIGHT_IRIS = np.arange(468, 473)  # centre first, then the ring
LEFT_IRIS = np.arange(473, 478)

RIGHT_EYE_UPPER = np.array([246, 161, 160, 159, 158, 157, 173])
RIGHT_EYE_LOWER = np.array([7, 163, 144, 145, 153, 154, 155])
RIGHT_EYE_CORNERS = np.array([33, 133])
LEFT_EYE_UPPER = np.array([466, 388, 387, 386, 385, 384, 398])
LEFT_EYE_LOWER = np.array([249, 390, 373, 374, 380, 381, 382])
LEFT_EYE_CORNERS = np.array([263, 362])

INNER_LIP_UPPER = np.array([191, 80, 81, 82, 13, 312, 311, 310, 415])
INNER_LIP_LOWER = np.array([95, 88, 178, 87, 14, 317, 402, 318, 324])
INNER_LIP_CORNERS = np.array([78, 308])

# Points that move little with expression: forehead, nose bridge, temples, eye corners,
# cheekbones. Head pose is fitted on these so that speech does not read as head motion.
RIGID = np.array(
    [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 127, 356, 234, 454, 33, 133, 263, 362,
     116, 345, 123, 352, 108, 337, 67, 297, 21, 251]
)  # fmt: skip


def eye_contour(side: str) -> np.ndarray:
    if side == "right":
        return np.concatenate([RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER])
    return np.concatenate([LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER])
