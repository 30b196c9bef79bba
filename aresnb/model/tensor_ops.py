"""The four small tensor helpers PPO, its buffer and generation share: right-padding, per-token
log-probs, per-token entropy, dropout off.

They were ``trl.trainer.utils``'s; they live here so the algorithm path needs no TRL (the GPU
machine's image has none, and TRL pulls in ``datasets``). Each computes what TRL 1.16's CPU path
computes, op for op (tests/test_tensor_ops.py compares them on random tensors), so results on the
CPU are bitwise the same as before.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pad(tensors: Sequence[torch.Tensor], padding_value: float = 0) -> torch.Tensor:
    """Stack tensors of different lengths (along dim 0; other dims may differ too) into one
    (N, longest, ...) tensor, each right-padded with ``padding_value``."""
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = torch.full((len(tensors), *shape), padding_value, dtype=tensors[0].dtype, device=tensors[0].device)
    for i, t in enumerate(tensors):
        out[i][tuple(slice(0, n) for n in t.shape)] = t
    return out


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at ``index``: (..., V) logits, (...) ids -> (...) log-probs.

    One batch row at a time, so the full (B, T, V) log-softmax is never held (V is 32k at paper
    scale). In float32/64 as picked logit - logsumexp; in half precision logsumexp loses the low
    bits, so there each row takes the log-softmax itself.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if temperature != 1.0:
        logits = logits / temperature
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    rows = [F.log_softmax(row, dim=-1).gather(dim=-1, index=ids.unsqueeze(-1)) for row, ids in zip(logits, index)]
    return torch.stack(rows).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) over the last axis, ``chunk_size`` positions at a time
    (the peak memory of one chunk's softmax, not the whole batch's): (..., V) -> (...)."""
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for chunk in flat.split(chunk_size, dim=0):
        logp = F.log_softmax(chunk, dim=-1)
        parts.append(-(torch.exp(logp) * logp).sum(-1))
    return torch.cat(parts, dim=0).reshape(logits.shape[:-1])


def disable_dropout_in_model(model: nn.Module) -> None:
    """Every ``nn.Dropout`` to p = 0 (PPO's log-probs must not depend on a dropout draw). T5's
    attention also keeps a functional dropout rate: ``models.zero_attention_dropout``."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0
