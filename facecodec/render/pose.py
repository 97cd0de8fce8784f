"""Redirection: the head drawn frontal, or turned by given angles, and the command-line
options that ask for it. Apart from the other edits (render/edits.py), whose avatar loads
the face tracker, so that the command line can declare these options without loading it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from facecodec.errors import FacecodecError
from facecodec.motion.motion import Motion

# Past a quarter turn the face looks away from the camera; a roll may turn it upside down.
MAX_TURN_DEG = 90.0
MAX_ROLL_DEG = 180.0


@dataclass(frozen=True)
class PoseEdit:
    """`frontal` zeroes the head rotation; yaw/pitch/roll (degrees) are then added."""

    frontal: bool = False
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def __post_init__(self) -> None:
        for name, value, most in (("yaw", self.yaw, MAX_TURN_DEG), ("pitch", self.pitch,
                                  MAX_TURN_DEG), ("roll", self.roll, MAX_ROLL_DEG)):
            if not -most <= value <= most:  # also refuses NaN
                raise FacecodecError(f"--{name} must be within -{most:g}..{most:g} degrees, "
                                     f"got {value:g}")

    @property
    def active(self) -> bool:
        return self.frontal or any((self.yaw, self.pitch, self.roll))

    def __call__(self, m: Motion) -> Motion:
        if not self.active:
            return m
        base = np.zeros(3) if self.frontal else m.rotation
        delta = np.radians([self.yaw, self.pitch, self.roll])
        # The measured surround belongs to the real pose; the mesh warp's rings turn hair
        # and ears with the new one.
        return m.with_pose(rotation=base + delta).with_surround(None)


def add_pose_arguments(parser: argparse.ArgumentParser, whose: str) -> None:
    """The options that build a PoseEdit (`pose_of`); `whose`: the head they turn."""
    parser.add_argument("--pose", choices=("source", "frontal"), default="source",
                        help=f"frontal: turn {whose} to face the camera")
    for name, most in (("yaw", MAX_TURN_DEG), ("pitch", MAX_TURN_DEG), ("roll", MAX_ROLL_DEG)):
        parser.add_argument(f"--{name}", type=float, default=0.0,
                            help=f"degrees added to {whose}'s {name} (-{most:g}..{most:g})")


def pose_of(args: argparse.Namespace) -> PoseEdit:
    """The PoseEdit `add_pose_arguments`' options ask for (out-of-range angles refused)."""
    return PoseEdit(args.pose == "frontal", args.yaw, args.pitch, args.roll)
