"""Output files appear whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: Path, dst: Path) -> None:
    """Move a finished temporary file onto `dst`. mkstemp makes files private (0600); give
    the result the mode an ordinary `open()` would have (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)
