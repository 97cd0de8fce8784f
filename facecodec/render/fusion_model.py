"""Which layer-fusion model ships, readable without torch (the sender names it in the header).

The sender writes the id of the fusion model it shipped with into the stream header
(`layer_model`); a receiver whose model differs refuses the stream with a clear message
rather than drawing frames the sender never checked.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_WEIGHTS = ASSETS / "layerfuse_v1.safetensors"  # layers smaller than the crop
FULL_SIZE_WEIGHTS = ASSETS / "layercolour_v1.safetensors"  # colour of layers as large as the crop
SHIPPED = (DEFAULT_WEIGHTS, FULL_SIZE_WEIGHTS)
MODEL_PREFIX = "layerfuse-v1"
# The training-free fusion (bicubic layer + gated warp detail): used when no weights ship.
GATE_MODEL_ID = "layerfuse-gate-v1"


def default_fusion_id(weights: Path = DEFAULT_WEIGHTS) -> str:
    """Model id of a shipped fusion network, or the training-free fusion's id."""
    meta = weights.with_suffix(".json")
    if weights.exists() and meta.exists():
        return str(json.loads(meta.read_text())["model_id"])
    return GATE_MODEL_ID


def shipped_fusion_ids() -> list[str]:
    """Ids of the fusion networks this build ships, and of the training-free fusion."""
    return [i for i in map(default_fusion_id, SHIPPED) if i != GATE_MODEL_ID] + [GATE_MODEL_ID]


def weights_for(model_id: str) -> Path | None:
    """The shipped weights of that model id, if this build has them."""
    return next((w for w in SHIPPED if default_fusion_id(w) == model_id), None)
