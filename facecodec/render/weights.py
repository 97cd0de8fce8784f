"""Trained weights on disk: safetensors beside a JSON of config, model id and training notes,
and the content hash that names a model in the bitstream."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from facecodec.errors import FacecodecError

M = TypeVar("M", bound=nn.Module)


def content_id(net: nn.Module, prefix: str) -> str:
    """`prefix-xxxxxxxx`: a hash of the config and weights, so the stream header names the
    exact model (the same weights under another config draw other frames)."""
    h = hashlib.sha256()
    config = getattr(net, "config", None)
    if config is not None:
        fields = config.identity() if hasattr(config, "identity") else asdict(config)
        h.update(json.dumps(fields, sort_keys=True).encode())
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    return f"{prefix}-{h.hexdigest()[:8]}"


def save_model(net: nn.Module, path: Path, model_id: str,
               meta: Mapping[str, object] | None) -> str:
    """Write `path` (safetensors) and `path`.json (model id, config, `meta`); return the id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
              str(tmp))
    tmp.replace(path)
    config: Any = net.config  # the network's dataclass, which nn.Module types as a submodule
    info = {"model_id": model_id, "config": asdict(config), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return model_id


def load_model(path: Path, what: str, build: Callable[[dict[str, Any]], M]) -> M:
    """The network written by `save_model` at `path`: `build` makes it from the JSON's
    config, then its tensors are loaded; in eval mode."""
    meta = path.with_suffix(".json")
    if not path.exists() or not meta.exists():
        raise FacecodecError(f"{what} not found: {path} (+ .json)")
    net = build(json.loads(meta.read_text())["config"])
    net.load_state_dict(load_file(str(path)))
    return net.eval()
