"""The one exception type the command line turns into a one-line error and exit code."""


class FacecodecError(Exception):
    """A user-facing failure: bad input, corrupt stream, missing face.

    The message must fit on one line and say what is wrong and, where it helps, what to do.
    """

    exit_code = 2


class BitstreamError(FacecodecError):
    """A stream that cannot be parsed: truncated, corrupt, or of an unknown version."""

    exit_code = 3
