"""The shared data's fixed splits (splits.json): names only, so reading them needs no video
or face stack."""

from __future__ import annotations

import json
from pathlib import Path


def load_split(data_dir: Path, split: str) -> list[Path]:
    names = json.loads((data_dir / "splits.json").read_text())[split]
    return [data_dir / n for n in names]
