"""The shared data's fixed splits (splits.json): names only, so reading them needs no video
or face stack."""

from __future__ import annotations

import json
from pathlib import Path

from facecodec.errors import FacecodecError


def load_split(data_dir: Path, split: str) -> list[Path]:
    """The clips of `split`; FacecodecError (one line) for a missing or malformed splits.json."""
    path = data_dir / "splits.json"
    try:
        splits = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FacecodecError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(splits, dict):
        raise FacecodecError(f"{path}: not a JSON object of splits")
    if split not in splits:
        raise FacecodecError(f"{path}: no split '{split}' (it has: {', '.join(map(str, splits))})")
    names = splits[split]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise FacecodecError(f"{path}: '{split}' must be a list of clip names")
    return [data_dir / n for n in names]
