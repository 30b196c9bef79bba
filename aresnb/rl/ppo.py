"""PPO with sentence-level Teacher rewards for an encoder-decoder policy, top to bottom.

ARES (Byun et al. 2024) fine-tunes the rationale model with PPO on ONE buffer per round: k
rationales per train problem sampled by the policy entering the round, each sentence scored by a
Teacher (stage 03). This file is the algorithm in the spirit of CleanRL's ``ppo.py``; rewards
arrive as data, nothing here calls the Teacher. ``train_ppo``:

1. rollout statistics, once, before any update, from the policy that sampled the buffer: the
   per-token log-probs (the "old" ones; that policy IS the reference, so they are the reference's
   too) and the critic's values;
2. rewards: ``score_j - 0.5`` at the token that ends sentence j. The paper's per-token penalty
   ``-beta * (log pi - log pi_ref)`` is exactly zero here, since every token was sampled and scored
   by the reference itself (so it is in the reference code, whose reference model is a copy of the
   policy entering the round); the KL to the reference is measured on every step and reported,
   and ``kl_loss_coef`` can add it to the loss as an explicit guard (off in the paper files);
3. GAE(gamma, lambda) advantages and returns for the whole buffer;
4. ``ppo_epochs`` passes over the buffer (:mod:`aresnb.rl.ppo_buffer` plans them, grouping similar
   lengths): one optimizer step per ``batch_size`` sequences, accumulated over micro-batches,
   advantages whitened over each step's sequences; the clipped surrogate plus ``vf_coef`` times
   the value MSE, AdamW;
5. metrics: one row per optimizer step (``METRIC_NAMES``), a progress line, a pass summary (:mod:`aresnb.rl.ppo_metrics`).

A step's loss is the sum of its per-token losses divided by the step's token count (all
processes), so cutting a step into micro-batches -- or processes -- leaves its gradient unchanged.
Token alignment: see :mod:`aresnb.rl.ppo_math`. Runs through ``accelerate`` (CPU here, ``accelerate
launch`` on GPUs); resume from the last checkpoint is exact (dropout is off, the plan is seeded).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from accelerate.utils import gather_object
from torch import nn

from aresnb.config import PPOConfig
from aresnb.io import append_jsonl, read_jsonl
from aresnb.model.checkpoints import Checkpoints
from aresnb.model.distributed import make_accelerator
from aresnb.model.multimodal_t5 import enable_gradient_checkpointing, zero_attention_dropout
from aresnb.model.optim import weight_decay_groups
from aresnb.model.tensor_ops import disable_dropout_in_model, entropy_from_logits, selective_log_softmax
from aresnb.rl.ppo_buffer import Buffer, OptimizerStep, PPOSample, plan_steps, split_dropped
from aresnb.rl.ppo_math import (compute_gae, kl_token_estimates, masked_whiten, policy_token_losses, sentence_rewards,
                                value_token_losses)
from aresnb.rl.ppo_metrics import METRIC_NAMES, SUMS, kl_by_pass, progress_line, step_metrics  # noqa: F401 (METRIC_NAMES: the public name)
from aresnb.rl.value_model import Seq2SeqValueModel, decoder_inputs, encode_sources



# --------------------------------------------------------------------------------------------
# Models and optimizer
# --------------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """Policy and critic as one module, so accelerate wraps (and DDP syncs) them together."""

    def __init__(self, policy: nn.Module, value_model: Seq2SeqValueModel):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # Each distinct source is encoded once; its responses (the k samples of a prompt) read it.
        inputs = decoder_inputs(batch, encode_sources(self.policy, batch))
        # float32 out: under mixed precision the log-softmax and the losses stay in full precision
        if self.value_model.shared:  # one forward: the head reads the policy's last decoder states
            out = self.policy(**inputs, output_hidden_states=True)
            return out.logits.float(), self.value_model.head(out.decoder_hidden_states[-1]).float()
        return self.policy(**inputs).logits.float(), self.value_model(**batch).float()


def make_optimizer(model: nn.Module, cfg: PPOConfig) -> torch.optim.Optimizer:
    """AdamW as the reference code: weight decay on every weight but LayerNorm weights and biases
    (:mod:`aresnb.model.optim`, the rule every trainer shares)."""
    groups = weight_decay_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)


# --------------------------------------------------------------------------------------------
# 1. Rollout statistics
# --------------------------------------------------------------------------------------------


def rollout_statistics(actor_critic: nn.Module, buffer: Buffer, first_pass: Sequence[OptimizerStep],
                       temperature: float, accelerator: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(old log-probs, values), (N, T), of the whole buffer under the models as they are now.

    Computed on the micro-batches of the first pass, as they will be trained, and in grad mode
    (attention kernels differ in the last bits between grad and no-grad mode): the first
    optimizer step then sees exactly the same numbers again, its ratio is exactly 1. Each
    process computes its micro-batches; the results are gathered so every process has all.
    """
    local = {}
    for step in first_pass:
        for rows in step.micro_batches:
            if not rows:
                continue
            batch = buffer.batch(rows, accelerator.device)
            logits, values = actor_critic(batch)  # the graph is dropped with the outputs: no backward
            logprobs = selective_log_softmax(logits.detach(), batch["response_ids"], temperature=temperature)
            values = values.detach()
            for j, i in enumerate(rows):
                n = buffer.lengths[i]
                local[i] = (logprobs[j, :n].float().cpu(), values[j, :n].float().cpu())
    merged: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for part in gather_object([local]) if accelerator.num_processes > 1 else [local]:
        merged.update(part)
    if len(merged) != len(buffer):
        raise RuntimeError(f"rollout statistics cover {len(merged)} of {len(buffer)} sequences")
    old_logprobs, values = torch.zeros(buffer.shape), torch.zeros(buffer.shape)
    for i, (lp, v) in merged.items():
        old_logprobs[i, : len(lp)], values[i, : len(v)] = lp, v
    return old_logprobs, values


def warm_up_critic(actor_critic: nn.Module, value_model: Seq2SeqValueModel, policy: nn.Module, buffer: Buffer,
                   plan: Sequence[OptimizerStep], targets: torch.Tensor, cfg: PPOConfig, accelerator: Any) -> list[float]:
    """Passes over the buffer that train only the critic, on the rewards-to-go; the policy is untouched.

    A separate critic trains whole; a shared one only its head (the trunk is the policy's).
    Returns the mean squared error of each pass.
    """
    policy_ids = {id(p) for p in policy.parameters()}
    params = list(value_model.head.parameters()) if value_model.shared else [
        p for p in value_model.parameters() if id(p) not in policy_ids]
    critic_opt = accelerator.prepare(torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                                       eps=cfg.adam_eps, weight_decay=0.0))
    losses: dict[int, list[float]] = {}
    n_proc = accelerator.num_processes
    for step in plan:
        last = len(step.micro_batches) - 1
        for j, micro in enumerate(step.micro_batches):
            weight = n_proc / step.tokens if micro else 0.0
            micro = micro or step.sequences[:1]
            batch = buffer.batch(micro, accelerator.device)
            m = batch["mask"].float()
            with contextlib.nullcontext() if j == last else accelerator.no_sync(actor_critic):
                _, values = actor_critic(batch)
                err = ((values - targets[list(micro), : m.shape[1]].to(values.device)) ** 2 * m).sum()
                accelerator.backward(err * weight)
            if weight:
                losses.setdefault(step.epoch, []).append(float(err.detach()) / max(float(m.sum()), 1.0))
        critic_opt.step()
        critic_opt.zero_grad()
    return [float(np.mean(v)) for _, v in sorted(losses.items())]


# --------------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------------


@dataclass
class PPOResult:
    optimizer_steps: int
    passes: int
    sequences: int  # sequences in the buffer that trained (kept)
    dropped: int  # left out: no usable Teacher reply
    resumed_from_step: int | None
    wall_time_s: float
    # max |log-prob of stage 03's sampler - rollout log-prob| over every token: ~0 when the ids,
    # the model and the token alignment agree (batching changes the last bits only)
    sampling_logprob_gap: float | None = None
    value_warmup_loss: list[float] = field(default_factory=list)  # per warm-up pass (ppo.value_warmup_passes)
    kl_by_pass: list[dict] = field(default_factory=list)  # per pass: mean objective/kl, objective/kl_k3
    metrics: list[dict] = field(default_factory=list)


def train_ppo(
    policy: nn.Module,
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
    fingerprint: str = "",
    gradient_checkpointing: bool = False,
    on_step_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> PPOResult:
    """Run PPO over the buffer ``samples`` (dropped replies are left out and counted).

    ``policy`` is the policy entering the round (it sampled ``samples``; it is also the
    reference). Writes ``metrics.jsonl`` and ``checkpoints/`` under ``out_dir`` and resumes from
    the last checkpoint there whose ``fingerprint`` (what the caller says identifies the run:
    parameters, buffer) matches. The trained weights are in ``policy`` and ``value_model``.
    """
    started = time.time()
    out_dir = Path(out_dir)
    metrics_file = out_dir / "metrics.jsonl"
    accelerator = accelerator or make_accelerator()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    if decoder_start_token_id is None:
        decoder_start_token_id = policy.config.decoder_start_token_id

    # ---- the buffer and the plan of optimizer steps -------------------------------------------
    kept, dropped = split_dropped(samples)
    if not kept:
        raise ValueError(f"PPO has nothing to train on: {len(samples)} samples, {dropped} without a usable reply")
    buffer = Buffer(kept, pad_token_id, decoder_start_token_id, features)
    steps = plan_steps(buffer.lengths, cfg.batch_size, cfg.micro_batch_size, cfg.ppo_epochs, seed, n_proc, rank,
                       sort_window=cfg.sort_window, groups=buffer.groups)
    steps = steps[: cfg.max_steps] if cfg.max_steps is not None else steps

    # ---- models: dropout off (log-probs must not depend on a dropout draw) ---------------------
    for m in (policy, value_model):
        disable_dropout_in_model(m)
    if gradient_checkpointing:
        for m in (policy, value_model.trunk):
            enable_gradient_checkpointing(m)
            zero_attention_dropout(m)  # checkpointing needs training mode: no dropout may act there
    actor_critic = ActorCritic(policy, value_model)
    optimizer = make_optimizer(actor_critic, cfg)
    actor_critic, optimizer = accelerator.prepare(actor_critic, optimizer)
    # eval mode on purpose: some attention layers apply functional dropout that
    # disable_dropout_in_model cannot reach; gradients flow the same in eval mode. Gradient
    # checkpointing acts in training mode only, with that dropout zeroed above.
    actor_critic.train(gradient_checkpointing)

    # ---- 1-3. rollout statistics, rewards, advantages: once, for the whole buffer -------------
    mask = buffer.tensors["mask"].float()
    scores = [s.scores for s in kept]
    score_rewards = sentence_rewards(scores, [s.sentence_end_indices for s in kept], buffer.shape)
    warmup = []
    if cfg.value_warmup_passes:  # an explicit guard (off in the paper): a critic that knows the buffer first
        to_go, _ = compute_gae(score_rewards, torch.zeros_like(mask), mask, cfg.gamma, 1.0)
        plan = plan_steps(buffer.lengths, cfg.batch_size, cfg.micro_batch_size, cfg.value_warmup_passes, seed + 7919,
                          n_proc, rank, sort_window=cfg.sort_window, groups=buffer.groups)
        warmup = warm_up_critic(actor_critic, value_model, policy, buffer, plan, to_go, cfg, accelerator)
        optimizer.zero_grad()  # a shared trunk received gradients it must not keep
    old_logprobs, old_values = rollout_statistics(actor_critic, buffer, [s for s in steps if s.epoch == 0],
                                                  temperature, accelerator)
    gap = sampling_logprob_gap(kept, old_logprobs)
    advantages, returns = compute_gae(score_rewards, old_values, mask, cfg.gamma, cfg.lam)

    # ---- resume -------------------------------------------------------------------------------
    checkpoints = Checkpoints(out_dir / "checkpoints", fingerprint, keep=2, log=log)
    done, _ = checkpoints.resume(accelerator, metrics_file)

    # ---- 4. passes over the buffer -------------------------------------------------------------
    for step in steps[done:]:
        t0 = time.time()
        rows = list(step.sequences)
        position = {r: k for k, r in enumerate(rows)}
        step_adv = advantages[rows]
        if cfg.whiten_advantages:  # over this step's sequences (all processes): every process holds them
            step_adv = masked_whiten(step_adv, mask[rows])
        sums = torch.zeros(len(SUMS), dtype=torch.float64)
        last = len(step.micro_batches) - 1
        for j, micro in enumerate(step.micro_batches):
            # A process with nothing left in this slot runs its step's first sequence at weight 0,
            # so every process reduces gradients the same number of times.
            weight = n_proc / step.tokens if micro else 0.0
            micro = micro or step.sequences[:1]
            batch = buffer.batch(micro, accelerator.device)
            width = batch["mask"].shape[1]
            idx = list(micro)
            sync = contextlib.nullcontext() if j == last else accelerator.no_sync(actor_critic)
            with sync:
                logits, values = actor_critic(batch)
                logprobs = selective_log_softmax(logits, batch["response_ids"], temperature=temperature)
                m = batch["mask"].float()
                old_lp = old_logprobs[idx, :width].to(logprobs.device)
                adv = step_adv[[position[i] for i in idx], :width].to(logprobs.device)
                pg, ratio, clipped = policy_token_losses(logprobs, old_lp, adv, m, cfg.clip_range)
                vf, vf_clipped = value_token_losses(values, old_values[idx, :width].to(values.device),
                                                    returns[idx, :width].to(values.device), m, cfg.clip_range_value)
                kl = kl_token_estimates(logprobs, old_lp, m)  # the old log-probs are the reference's
                loss = (pg.sum() + cfg.vf_coef * vf.sum() + cfg.kl_loss_coef * kl.sum()) * weight
                accelerator.backward(loss)
            if weight:
                with torch.no_grad():
                    entropy = entropy_from_logits(logits.detach() / temperature)
                    log_ratio = (logprobs - old_lp) * m
                    sums += torch.tensor([pg.sum(), vf.sum(), kl.sum(), clipped.sum(), vf_clipped.sum(),
                                          (ratio * m).sum(), (entropy * m).sum(), m.sum(), log_ratio.sum(), len(idx)],
                                         dtype=torch.float64)
        if cfg.max_grad_norm is not None:
            accelerator.clip_grad_norm_(actor_critic.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()

        # ---- 5. metrics (summed over processes), progress line, JSONL, checkpoint ---------------
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
        row = step_metrics(step, sums, buffer, rows, scores, score_rewards, old_values, returns, mask, cfg,
                           elapsed=time.time() - t0)
        if accelerator.is_main_process:
            append_jsonl(metrics_file, row)
            accelerator.log(row, step=step.index)  # the trackers make_accelerator was given, if any
            if step.index % cfg.log_every_steps == 0 or step.index == len(steps):
                log(progress_line(row, len(steps), cfg.ppo_epochs))
        if step.index % cfg.save_every_steps == 0 or step.index == len(steps):
            checkpoints.save(accelerator, step.index)
        if on_step_end is not None:
            on_step_end(step.index, row)

    accelerator.wait_for_everyone()
    metrics = read_jsonl(metrics_file) if accelerator.is_main_process else []
    return PPOResult(
        optimizer_steps=len(steps), passes=len({s.epoch for s in steps}), sequences=len(kept), dropped=dropped,
        resumed_from_step=done or None, wall_time_s=time.time() - started, sampling_logprob_gap=gap,
        kl_by_pass=kl_by_pass(metrics), value_warmup_loss=warmup,
        metrics=metrics,
    )


# --------------------------------------------------------------------------------------------
# Rollout check
# --------------------------------------------------------------------------------------------


def sampling_logprob_gap(samples: Sequence[PPOSample], old_logprobs: torch.Tensor) -> float | None:
    """Largest gap between the log-probs stage 03 recorded and the rollout's (None if none recorded)."""
    gaps = [float((old_logprobs[i, : len(s.sample_logprobs)] - torch.tensor(s.sample_logprobs)).abs().max())
            for i, s in enumerate(samples) if s.sample_logprobs]
    return max(gaps) if gaps else None
