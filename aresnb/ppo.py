"""PPO with sentence-level Teacher rewards for an encoder-decoder policy, top to bottom.

ARES (Byun et al. 2024) fine-tunes the rationale model with PPO on one collected buffer: k sampled
rationales per train problem, each sentence scored by a Teacher (stage 03). This file is the whole
algorithm, in the spirit of CleanRL's ``ppo.py``; rewards arrive as data, nothing here calls the
Teacher. One *update* takes ``batch_size`` buffered samples and

1. rolls them out through the models: the policy's log-probs (the "old" ones), the frozen
   reference's log-probs and the critic's values, all aligned on the response tokens;
2. builds per-token rewards: ``score_j - 0.5`` at the token that ends sentence j, plus the KL
   penalty ``-beta * (log pi - log pi_ref)`` on every token;
3. computes GAE(gamma, lambda) advantages and returns (advantages optionally whitened);
4. runs ``ppo_epochs`` passes of shuffled minibatches (gradient accumulation over micro-batches)
   on the clipped surrogate plus ``vf_coef`` times the value loss, with AdamW.

Token alignment: for a response ``y`` (the target "Solution: ..." + EOS) the decoder reads
``[start] + y[:-1]``; position t predicts ``y[t]``, so ``logprobs[:, t] = log pi(y_t | x, y_<t)``
and ``values[:, t]`` is V of the state before ``y_t``. Responses are right-padded; ``mask`` marks
real tokens.

Runs through ``accelerate`` (CPU here, ``accelerate launch`` on GPUs). ``batch_size`` and
``minibatch_size`` are global (across processes); each process takes its share.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn
from trl.trainer.utils import disable_dropout_in_model, entropy_from_logits, pad, selective_log_softmax

from aresnb.checkpoints import Checkpoints
from aresnb.config import PPOConfig
from aresnb.io import append_jsonl, read_jsonl
from aresnb.rationale_metrics import repeated_sentence_rate
from aresnb.value_model import Seq2SeqValueModel, model_inputs

# The metric names written per update (JSONL) -- fixed, so notebooks and reports can rely on them.
# objective/kl is the per-sequence sum of log pi - log pi_ref over the buffered responses, the
# quantity the penalty uses. The buffer was sampled by the policy entering the round (= the
# reference), so its expectation is -KL(ref || pi) and it can be negative once pi moves.
METRIC_NAMES = (
    "update", "epoch",
    "objective/scores", "objective/sentence_reward", "objective/non_score_reward", "objective/rlhf_reward",
    "objective/kl", "objective/kl_coef",
    "policy/approx_kl", "policy/clipfrac", "policy/entropy", "policy/ratio_mean",
    "loss/policy", "loss/value", "loss/total",
    "val/mean", "val/clipfrac", "val/explained_variance",
    "response/length", "response/repetition_rate", "response/sentences",
    "buffer/sequences", "buffer/dropped", "charts/sps", "time/update_s", "time/update_cpu_s",
)


# --------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Buffer -> tensors
# --------------------------------------------------------------------------------------------


@dataclass
class PPOSample:
    """One buffered rationale, tokenized; ``scores`` is None when the Teacher reply was dropped."""

    qid: str
    sample_index: int
    source_ids: list[int]
    response_ids: list[int]  # the decoder labels: target tokens ending with EOS
    sentence_end_indices: list[int]  # index into response_ids of each sentence's last token
    scores: Optional[list[float]]
    dropped: bool = False
    feature_row: Optional[int] = None  # row of the features array (multimodal policies)
    text: str = ""  # the rationale, for the repetition metric


def split_dropped(samples: Sequence[PPOSample]) -> tuple[list[PPOSample], int]:
    """Samples that can train (reply kept, one score per sentence) and the count left out."""
    kept = [
        s for s in samples
        if not s.dropped and s.scores is not None and len(s.scores) == len(s.sentence_end_indices) and s.response_ids
    ]
    return kept, len(samples) - len(kept)


def collate(samples: Sequence[PPOSample], pad_token_id: int, decoder_start_token_id: int,
            features: np.ndarray | None = None) -> dict[str, Any]:
    """Right-padded tensors of a list of samples (plus the ragged sentence data as lists)."""
    source = [torch.tensor(s.source_ids, dtype=torch.long) for s in samples]
    response = [torch.tensor(s.response_ids, dtype=torch.long) for s in samples]
    decoder_in = [torch.tensor([decoder_start_token_id] + s.response_ids[:-1], dtype=torch.long) for s in samples]
    batch: dict[str, Any] = {
        "input_ids": pad(source, padding_value=pad_token_id),
        "attention_mask": pad([torch.ones_like(t) for t in source], padding_value=0),
        "decoder_input_ids": pad(decoder_in, padding_value=pad_token_id),
        "response_ids": pad(response, padding_value=pad_token_id),
        "mask": pad([torch.ones_like(t) for t in response], padding_value=0),
        "sentence_end_indices": [s.sentence_end_indices for s in samples],
        "scores": [s.scores for s in samples],
    }
    batch["decoder_attention_mask"] = batch["mask"]
    if features is not None:
        rows = [s.feature_row for s in samples]
        if any(r is None for r in rows):
            raise ValueError("collate: features were given but a sample has no feature_row")
        batch["image_features"] = torch.as_tensor(np.asarray(features[rows]), dtype=torch.float32)
    return batch


ENCODER_KEYS = ("input_ids", "attention_mask")
DECODER_KEYS = ("decoder_input_ids", "decoder_attention_mask", "response_ids", "mask")


def select_rows(batch: dict[str, Any], idx: torch.Tensor | slice) -> tuple[dict[str, torch.Tensor], int]:
    """Rows ``idx`` of the tensors, padding columns beyond their longest source/response cut off.

    Returns the sub-batch and its response length (to cut per-token buffers the same way).
    """
    sub = {k: v[idx] for k, v in batch.items() if torch.is_tensor(v)}
    src_len = max(1, int(sub["attention_mask"].sum(1).max()))
    resp_len = max(1, int(sub["mask"].sum(1).max()))
    for k in ENCODER_KEYS:
        sub[k] = sub[k][:, :src_len]
    for k in DECODER_KEYS:
        sub[k] = sub[k][:, :resp_len]
    return sub, resp_len


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# Rewards, GAE, losses
# --------------------------------------------------------------------------------------------


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


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """Per-token ``-beta * (log pi - log pi_ref)`` on real tokens."""
    return -kl_coef * (logprobs - ref_logprobs) * mask


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


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (to minimise) and its diagnostics.

    ``policy/clipfrac`` is the real clip fraction: the share of tokens where the clipped term is
    the one taken (its gradient is zero), not merely where the ratio left [1-c, 1+c].
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "policy/approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),  # k3 estimator, >= 0
            "policy/ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * MSE to the returns; with ``clip_range_value`` the pessimum of clipped and unclipped."""
    loss_unclipped = (values - returns) ** 2
    if clip_range_value is None:
        loss = 0.5 * masked_mean(loss_unclipped, mask)
        clipfrac = torch.zeros(())
    else:
        clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
        loss_clipped = (clipped_values - returns) ** 2
        loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask).detach()
    return loss, {"val/clipfrac": clipfrac}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, <= 0 a useless one."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)


class FixedKLController:
    """A constant beta (the paper)."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_sequences: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019): move beta so the per-sequence KL approaches ``target``."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target, horizon

    def update(self, current_kl: float, n_sequences: int) -> None:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_sequences / self.horizon


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Policy and critic as one module, so accelerate wraps (and DDP syncs) them together."""

    def __init__(self, policy: nn.Module, value_model: Seq2SeqValueModel):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = model_inputs(batch)
        if self.value_model.shared:
            out = self.policy(**inputs, output_hidden_states=True)
            values = self.value_model.head(out.decoder_hidden_states[-1])
        else:
            out = self.policy(**inputs)
            values = self.value_model(**inputs)
        return out.logits, values


def response_logprobs(logits: torch.Tensor, response_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(y_t | ...) of the response tokens, at the sampling temperature."""
    return selective_log_softmax(logits, response_ids, temperature=temperature)


def rollout(actor_critic: nn.Module, ref_policy: nn.Module, batch: dict[str, Any], temperature: float,
            chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy log-probs, reference log-probs, values and entropy per response token (no grad)."""
    n, width = batch["response_ids"].shape
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, n, chunk_size):
        sub, _ = select_rows(batch, slice(start, start + chunk_size))
        logits, values = actor_critic(sub)
        logprobs = response_logprobs(logits, sub["response_ids"], temperature)
        entropy = entropy_from_logits(logits / temperature)
        del logits
        ref_logprobs = response_logprobs(ref_policy(**model_inputs(sub)).logits, sub["response_ids"], temperature)
        parts.append(tuple(F.pad(t, (0, width - t.shape[1])) for t in (logprobs, ref_logprobs, values, entropy)))
    return tuple(torch.cat(t) for t in zip(*parts))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


@dataclass
class PPOResult:
    updates: int
    sequences_trained: int
    dropped: int
    unused: int  # kept samples beyond the last full batch
    resumed_from: Optional[int]
    wall_time_s: float
    metrics: list[dict] = field(default_factory=list)


def make_accelerator(cpu: bool | None = None) -> Any:
    """The Accelerator PPO runs under (DDP may see critic-copy weights without gradients).

    ``cpu=None`` picks the CPU when there is no CUDA device: accelerate then joins the launched
    processes over gloo (without it, CPU-only processes would each run alone).
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def plan_batches(n_samples: int, batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled, fixed-size batches of sample indices (the same on every process and on resume)."""
    order = list(range(n_samples))
    random.Random(seed).shuffle(order)
    size = min(batch_size, n_samples)
    return [order[i:i + size] for i in range(0, len(order) - size + 1, size)] if size else []


def train_ppo(
    policy: nn.Module,
    ref_policy: nn.Module,
    value_model: Seq2SeqValueModel,
    samples: Sequence[PPOSample],
    cfg: PPOConfig,
    out_dir: str | Path,
    *,
    accelerator: Any = None,
    features: np.ndarray | None = None,
    pad_token_id: int = 0,
    decoder_start_token_id: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    on_update_end: Callable[[int, dict], None] | None = None,
    fingerprint: str = "",
    log: Callable[[str], None] = print,
) -> PPOResult:
    """Run PPO over the buffer ``samples`` (dropped replies are left out and counted).

    ``cfg`` is the ``ppo`` config section. Writes ``metrics.jsonl`` and ``checkpoints/`` under
    ``out_dir`` and resumes from the last checkpoint there when its ``fingerprint`` (what the
    caller says identifies the run: parameters, buffer) matches; others are discarded. The
    trained weights are in ``policy`` and ``value_model`` (unwrapped) on return.
    """
    started = time.time()
    out_dir = Path(out_dir)
    metrics_file = out_dir / "metrics.jsonl"
    if accelerator is None:
        accelerator = make_accelerator()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    if cfg.batch_size % n_proc or cfg.minibatch_size % n_proc:
        raise ValueError(f"ppo.batch_size ({cfg.batch_size}) and ppo.minibatch_size ({cfg.minibatch_size}) "
                         f"must be multiples of the number of processes ({n_proc})")
    if decoder_start_token_id is None:
        decoder_start_token_id = policy.config.decoder_start_token_id
    torch.manual_seed(seed)

    # ---- the buffer: leave out dropped replies, cut into fixed batches ----------------------
    kept, dropped = split_dropped(samples)
    batches = plan_batches(len(kept), cfg.batch_size, seed)
    if cfg.max_updates is not None:
        batches = batches[: cfg.max_updates]
    batches = [b[: len(b) - len(b) % n_proc] for b in batches]
    batches = [b for b in batches if b]
    unused = len(kept) - sum(len(b) for b in batches)
    if not batches:
        raise ValueError(f"PPO has nothing to train on: {len(samples)} samples, {dropped} dropped replies")
    local_minibatch = cfg.minibatch_size // n_proc
    micro = max(1, math.ceil(local_minibatch / cfg.grad_accum))

    # ---- models: dropout off (log-probs must not depend on a dropout draw), reference frozen ----
    for m in (policy, ref_policy, value_model):
        disable_dropout_in_model(m)
    ref_policy.requires_grad_(False).eval()
    actor_critic = ActorCritic(policy, value_model)
    policy_ids = {id(p) for p in policy.parameters()}
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in policy.parameters() if p.requires_grad], "name": "policy"},
            {"params": [p for p in value_model.parameters() if id(p) not in policy_ids], "name": "value"},
        ],
        lr=cfg.lr, eps=1e-5,
    )
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    ref_policy.to(accelerator.device)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else FixedKLController(cfg.kl_coef))

    # ---- resume -------------------------------------------------------------------------------
    checkpoints = Checkpoints(out_dir / "checkpoints", fingerprint, keep=2, log=log)
    start_update, state = checkpoints.resume(accelerator, metrics_file, step_key="update")
    resumed_from = start_update or None
    if state is not None:
        kl_ctl.value = state["kl_coef"]

    metrics_log: list[dict] = []
    # eval mode on purpose: some attention layers apply functional dropout that
    # disable_dropout_in_model cannot reach; gradients flow the same in eval mode.
    actor_critic.eval()
    for update in range(start_update, len(batches)):
        t0, cpu0 = time.time(), time.process_time()
        batch_samples = [kept[i] for i in batches[update][rank::n_proc]]
        batch = to_device(collate(batch_samples, pad_token_id, decoder_start_token_id, features), accelerator.device)
        mask = batch["mask"].float()

        # 1. rollout: old log-probs, reference log-probs, values, entropy
        with torch.no_grad():
            old_logprobs, ref_logprobs, old_values, token_entropy = rollout(
                actor_critic, ref_policy, batch, temperature, cfg.rollout_batch_size)
            entropy = masked_mean(token_entropy, mask)
            old_values = old_values * mask

            # 2. rewards: sentence scores at sentence ends + per-token KL penalty
            score_rewards = sentence_rewards(batch["scores"], batch["sentence_end_indices"], mask.shape).to(mask.device)
            kl = (old_logprobs - ref_logprobs) * mask
            non_score_rewards = kl_penalty(old_logprobs, ref_logprobs, kl_ctl.value, mask)
            rewards = score_rewards + non_score_rewards

            # 3. advantages
            advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = masked_whiten(advantages, mask)

        # 4. PPO epochs over shuffled minibatches, gradient accumulation over micro-batches
        stats: dict[str, list[float]] = {}
        gen = torch.Generator().manual_seed(seed * 1_000_003 + update)
        local_n = len(batch_samples)
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(local_n, generator=gen).tolist()
            for mb_start in range(0, local_n, local_minibatch):
                mb = order[mb_start: mb_start + local_minibatch]
                chunks = [mb[i: i + micro] for i in range(0, len(mb), micro)]
                for c, chunk in enumerate(chunks):
                    idx = torch.tensor(chunk, device=mask.device)
                    sub, L = select_rows(batch, idx)
                    m = mask[idx, :L]
                    # gradients are all-reduced once per minibatch, on its last chunk
                    sync = contextlib.nullcontext() if c == len(chunks) - 1 else accelerator.no_sync(actor_critic)
                    with sync:
                        new_logits, new_values = actor_critic(sub)
                        new_logprobs = response_logprobs(new_logits, sub["response_ids"], temperature)
                        pg_loss, pg_stats = clipped_policy_loss(
                            new_logprobs, old_logprobs[idx, :L], advantages[idx, :L], m, cfg.clip_range)
                        vf_loss, vf_stats = value_loss(
                            new_values, old_values[idx, :L], returns[idx, :L], m, cfg.clip_range_value)
                        loss = pg_loss + cfg.vf_coef * vf_loss
                        accelerator.backward(loss * len(chunk) / len(mb))
                    for k, v in {"loss/policy": pg_loss, "loss/value": vf_loss, "loss/total": loss, **pg_stats, **vf_stats}.items():
                        stats.setdefault(k, []).append(float(v.detach()))
                if cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(actor_critic.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()

        # 5. metrics (averaged over processes), progress line, JSONL
        with torch.no_grad():
            seq_kl = kl.sum(1).mean()
            n_sentences = sum(len(s.sentence_end_indices) for s in batch_samples)
            row = {
                "objective/scores": sum(sum(s.scores) for s in batch_samples) / max(1, n_sentences),
                "objective/sentence_reward": score_rewards.sum(1).mean(),
                "objective/non_score_reward": non_score_rewards.sum(1).mean(),
                "objective/rlhf_reward": rewards.sum(1).mean(),
                "objective/kl": seq_kl,
                "policy/entropy": entropy,
                "val/mean": masked_mean(old_values, mask),
                "val/explained_variance": explained_variance(old_values, returns, mask),
                "response/length": mask.sum(1).mean(),
                "response/repetition_rate": repeated_sentence_rate([s.text for s in batch_samples]),
                "response/sentences": n_sentences / len(batch_samples),
            }
            row.update({k: float(np.mean(v)) for k, v in stats.items()})
            keys = sorted(row)
            reduced = accelerator.reduce(torch.tensor([float(row[k]) for k in keys], device=accelerator.device), "mean")
            row = dict(zip(keys, reduced.tolist()))
        kl_ctl.update(row["objective/kl"], len(batches[update]))
        elapsed = time.time() - t0
        seen = sum(len(b) for b in batches[: update + 1])
        row = {"update": update + 1, "epoch": seen / len(kept), **row,  # passes over the kept buffer
               "objective/kl_coef": kl_ctl.value, "buffer/sequences": len(batches[update]),
               "buffer/dropped": dropped, "charts/sps": len(batches[update]) / elapsed, "time/update_s": elapsed,
               "time/update_cpu_s": time.process_time() - cpu0}
        metrics_log.append(row)
        if accelerator.is_main_process:
            append_jsonl(metrics_file, row)
            log(f"update {update + 1}/{len(batches)} | score {row['objective/scores']:.3f} "
                f"reward {row['objective/rlhf_reward']:+.3f} kl {row['objective/kl']:.4f} "
                f"clipfrac {row['policy/clipfrac']:.3f} vloss {row['loss/value']:.4f} "
                f"ev {row['val/explained_variance']:+.2f} | {row['charts/sps']:.1f} seq/s")

        done = update + 1
        if done % cfg.save_every_updates == 0 or done == len(batches):
            checkpoints.save(accelerator, done, kl_coef=kl_ctl.value)
        if on_update_end is not None:
            on_update_end(done, row)

    accelerator.wait_for_everyone()
    return PPOResult(
        updates=len(batches), sequences_trained=sum(len(b) for b in batches), dropped=dropped, unused=unused,
        resumed_from=resumed_from, wall_time_s=time.time() - started, metrics=metrics_log,
    )
