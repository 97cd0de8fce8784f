"""The one exception type the command line turns into a one-line error and exit code, the
one SIGTERM raises, and the argument parser that reports a wrong argument the same way."""

from __future__ import annotations

import argparse
from typing import NoReturn


class FacecodecError(Exception):
    """A user-facing failure: bad input, corrupt stream, missing face.

    The message must fit on one line and say what is wrong and, where it helps, what to do.
    """

    exit_code = 2


class RateTooLow(FacecodecError):
    """A rate asked for (`--target-kbps`, a layer's) below the lowest this clip can be coded
    at: its motion alone costs more, or, in a short clip, its reference and layer pictures
    over few seconds. The bench leaves that setting out for the clip."""


class BitstreamError(FacecodecError):
    """A stream that cannot be parsed: truncated, corrupt, or of an unknown version."""

    exit_code = 3


class NotAStream(BitstreamError):
    """A file that is not an .fcv stream at all (no signature): bad input, not damage."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM (`kill`, `timeout`, a service manager stopping the command), raised where the
    program is so that open outputs are removed as for any error: Python's default is to
    die at once and leave their temporary files behind."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a wrong argument in one line, not under a usage block that
    buries it; `--help` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
