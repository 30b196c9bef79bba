"""Which weights AdamW decays: one rule for every trainer (SFT, the LoRA heads, PPO).

The paper's code trains under Hugging Face's ``Trainer`` (MM-CoT and ARES's SFT, its LoRA head)
and builds its PPO optimizer the same way: weight decay on every trainable parameter except
those of LayerNorm-like modules and those whose name contains "bias". The name rule is wider
than "a Linear's bias": it also spares ``nn.MultiheadAttention.in_proj_bias`` and T5's
``relative_attention_bias`` embedding, exactly as the reference does.
"""

from __future__ import annotations

from torch import nn


def is_norm(module: nn.Module) -> bool:
    """LayerNorm-like modules (T5's is its own RMS-style class, not nn.LayerNorm)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def decays(module: nn.Module, full_name: str) -> bool:
    """Whether the parameter ``full_name`` (owned directly by ``module``) gets weight decay."""
    return not is_norm(module) and "bias" not in full_name


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups over the trainable parameters: decayed, and not decayed.

    A parameter shared by several modules (tied embeddings) is counted once, under its first name.
    """
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{name}" if module_name else name
            (decay if decays(module, full_name) else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
