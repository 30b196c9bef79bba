"""PPO's arithmetic on padded per-token tensors: masked statistics, sentence rewards, GAE, losses.

Every tensor is (batch, response length), right-padded; ``mask`` is 1 on real response tokens.
Position t of a response is the action ``y_t`` taken in the state ``(x, y_<t)``: ``logprobs[:, t]
= log pi(y_t | x, y_<t)`` and ``values[:, t]`` is V of that state. The loss helpers return
per-token terms (zero on padding); the trainer sums them over an optimizer step and divides by
the step's token count, so a step's gradient does not depend on how it was cut into micro-batches.
"""

from __future__ import annotations

from typing import Sequence

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over ``axis``, or all elements)."""
    mask = mask.to(values.dtype)
    if axis is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(axis) / mask.sum(axis).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1 (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Scale ``values`` to unit variance over the mask (and zero mean when ``shift_mean``)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def sentence_rewards(scores: Sequence[Sequence[float]], end_indices: Sequence[Sequence[int]],
                     shape: tuple[int, int], baseline: float = 0.5) -> torch.Tensor:
    """(B, T) zeros with ``score_j - baseline`` added at the token that ends sentence j."""
    rewards = torch.zeros(shape)
    for b, (row_scores, row_ends) in enumerate(zip(scores, end_indices)):
        for score, t in zip(row_scores, row_ends):
            if not 0 <= t < shape[1]:
                raise IndexError(f"sentence end index {t} outside the response (length {shape[1]}) in row {b}")
            rewards[b, t] += float(score) - baseline
    return rewards


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (advantages + values) for right-padded responses."""
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]  # padding restarts the recursion
        advantages[:, t] = last_gae
        next_value = values[:, t]
    return advantages, advantages + values


def policy_token_losses(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate per token (to minimise), the ratio, and where the clipped term is taken.

    The clip indicator is the real clip fraction's numerator: tokens whose gradient the clip
    removes, not merely tokens whose ratio left [1-c, 1+c].
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    m = mask.to(logprobs.dtype)
    return torch.maximum(unclipped, clipped) * m, ratio, (clipped > unclipped).to(logprobs.dtype) * m


def value_token_losses(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip_range_value: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error to the returns per token (MSE, as the reference code); with
    ``clip_range_value`` the pessimum of clipped and unclipped. Also where the clipped one is taken."""
    m = mask.to(values.dtype)
    unclipped = (values - returns) ** 2
    if clip_range_value is None:
        return unclipped * m, torch.zeros_like(unclipped)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    clipped = (clipped_values - returns) ** 2
    return torch.maximum(unclipped, clipped) * m, (clipped > unclipped).to(values.dtype) * m


def kl_token_estimates(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(ref || pi) per token from tokens the reference sampled (Schulman's k3: r - 1 - log r >= 0)."""
    log_ratio = logprobs - ref_logprobs
    return (torch.exp(log_ratio) - 1.0 - log_ratio) * mask.to(logprobs.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, <= 0 a useless one."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)
