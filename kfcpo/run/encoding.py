"""What a checkpoint holds that is not a tensor, stored as tensors and plain values.

Lightning loads checkpoints with torch's weights_only unpickler, which reads tensors and
plain containers but refuses arbitrary pickled objects; `kfcpo eval` relies on that to
read checkpoints it does not trust. So opaque bytes (env states) and numpy's RNG state
are turned into tensors on save and back on load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def blob_to_tensor(blob: bytes) -> torch.Tensor:
    """Opaque bytes as a uint8 tensor (an empty one for no bytes)."""
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)


def blob_from_tensor(t: torch.Tensor) -> bytes:
    """The bytes `blob_to_tensor` stored."""
    return t.numpy().tobytes()


def numpy_state_to_tensors(state: tuple) -> dict[str, Any]:
    """numpy's legacy RNG state (name, keys, pos, has_gauss, gauss), as `np.random.get_state`
    gives it, with its key array as a tensor and the rest as plain values."""
    name, keys, pos, has_gauss, gauss = state
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def numpy_state_from_tensors(s: dict[str, Any]) -> tuple:
    """The state `numpy_state_to_tensors` stored, as `np.random.set_state` takes it."""
    keys = s["keys"].numpy().astype(np.uint32)
    return (s["name"], keys, s["pos"], s["has_gauss"], s["gauss"])
