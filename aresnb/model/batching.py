"""A batch as the model takes it: token id lists right-padded into one tensor, image-feature rows
gathered (zeros where a problem has none). The trainer's collator and generation share them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def pad_ids(seqs: Sequence[list[int]], value: int) -> torch.Tensor:
    """Right-pad token id lists to one (B, longest) tensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def gather_features(features: np.ndarray | None, indices: Sequence[int | None], shape: tuple[int, int] | None = None) -> torch.Tensor | None:
    """(B, P, D) float tensor of the given rows; None rows are zeros. None when nothing to gather."""
    if features is None:
        if shape is None or all(i is None for i in indices):
            return None
        return torch.zeros(len(indices), *shape)
    out = np.zeros((len(indices), *features.shape[1:]), dtype=np.float32)
    for j, i in enumerate(indices):
        if i is not None and i >= 0:
            out[j] = features[i]
    return torch.from_numpy(out)
