"""The one supervised seq2seq trainer: baseline SFT (QCM-E), SFT on corrections, the LoRA answer head.

``train_seq2seq`` takes examples (:mod:`aresnb.sft.examples`: ``{"source", "target",
"feature_index"}`` dicts, or a :class:`TokenizedExamples` set tokenised once and shared) and runs
through ``accelerate``: one process, or N launched ones (``run.num_processes``) that make the same
optimizer steps. ``batch_size`` is the global batch: every process derives the same seeded plan
(:func:`aresnb.sft.examples.plan_sft_steps`) and trains on its slice of each batch; a step's loss is
the sum of its token cross-entropies divided by the step's token count (all processes), so one
process or N give the same gradient. AdamW, linear or constant schedule after warm-up, gradient
accumulation and clipping, mixed precision (accelerate's autocast) and gradient checkpointing.
It appends ``metrics.jsonl`` (step, loss, lr, samples/s), checkpoints every N optimizer steps
(model, optimizer, scheduler, RNG states; the step says where in the plan) and resumes from the
last complete checkpoint of the same recipe and data (:mod:`aresnb.model.checkpoints`), so a killed run
continues where it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from aresnb.config.sections import TrainConfig
from aresnb.io import append_jsonl, read_jsonl
from aresnb.model.checkpoints import Checkpoints, fingerprint
from aresnb.model.distributed import make_accelerator
from aresnb.model.multimodal_t5 import enable_gradient_checkpointing
from aresnb.model.optim import weight_decay_groups
from aresnb.model.tracking import NO_TRACKING, Tracking
from aresnb.progress import Progress
from aresnb.sft.examples import (IGNORE_INDEX, Collator, SFTStep, TokenizedExamples, plan_sft_steps, process_rows,
                                 steps_per_epoch)


# ---- training ----------------------------------------------------------------------------------

OPTIMIZER_GROUPS = "decayed, not decayed"  # in the fingerprint: checkpoints of the one-group optimizer do not resume


@dataclass
class TrainResult:
    """What a training run did; ``model`` is the trained (unwrapped) model."""

    model: Any
    steps: int
    total_steps: int
    epochs: float
    first_loss: float | None
    last_loss: float | None
    wall_time_s: float
    samples_per_s: float
    resumed_from_step: int | None
    trainable_parameters: int
    processes: int = 1
    metrics: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("model")
        d.pop("metrics")
        return d


def recipe_fingerprint(train_cfg: TrainConfig, data: TokenizedExamples, total_steps: int, model: torch.nn.Module,
                       extra: dict) -> str:
    """What a checkpoint must match to be resumed: the recipe, the examples themselves (new
    Teacher corrections change the targets) and the trainable parameters' shapes."""
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
    # A saved optimizer state fits only the optimizer's own parameter groups (aresnb.model.optim's two).
    return fingerprint(dataclasses.asdict(train_cfg), data.digest, len(data), total_steps, shapes, extra,
                       OPTIMIZER_GROUPS)


@dataclass
class _LossWindow:
    """Step losses since the last metrics row, and the samples seen since training (re)started."""

    losses: list[float] = field(default_factory=list)
    samples: int = 0
    started: float = field(default_factory=time.time)

    def add(self, loss: float, n_samples: int) -> None:
        self.losses.append(loss)
        self.samples += n_samples

    def samples_per_s(self) -> float:
        return self.samples / max(time.time() - self.started, 1e-9)

    def flush(self) -> dict[str, float]:
        """The mean loss of the window (then emptied) and the throughput so far."""
        row = {"loss": float(np.mean(self.losses)), "samples_per_s": self.samples_per_s()}
        self.losses.clear()
        return row


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW on the trainable parameters and the configured schedule (linear or constant) after warm-up.

    Weight decay spares biases and LayerNorm weights, as Hugging Face's Trainer does (the paper's
    SFT runs under it): :func:`aresnb.model.optim.weight_decay_groups`.
    """
    optimizer = torch.optim.AdamW(weight_decay_groups(model, cfg.weight_decay), lr=cfg.lr)
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "linear":
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return optimizer, get_constant_schedule_with_warmup(optimizer, warmup)


def token_cross_entropy(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of the target tokens' cross-entropy, their count) of one batch, in float32.

    The batch carries ``decoder_input_ids`` (the shifted labels), so the model computes no loss
    of its own; the logits are upcast before the softmax (they are bf16 under autocast).
    """
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    mask = labels != IGNORE_INDEX
    loss = torch.nn.functional.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
    return loss, int(mask.sum())


def train_step(model: torch.nn.Module, data: TokenizedExamples, collate: Collator, step: SFTStep,
               accelerator: Any) -> tuple[float, int]:
    """Forward and backward of one optimizer step's share on this process; (the step's mean token
    loss over all processes, its global sequence count). The optimizer does not step here."""
    rank, n_proc = accelerator.process_index, accelerator.num_processes
    tokens = sum(data.target_tokens(i) for b in step.batches for i in b)
    total = torch.zeros((), dtype=torch.float64)
    for j, batch_rows in enumerate(step.batches):
        rows = process_rows(batch_rows, rank, n_proc)
        # A process left without rows runs the batch's first one at weight 0, so every process
        # reduces gradients the same number of times.
        weight = n_proc / max(tokens, 1) if rows else 0.0
        batch = {k: v.to(accelerator.device) for k, v in collate([data[i] for i in rows or batch_rows[:1]]).items()}
        sync = j == len(step.batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            loss, _ = token_cross_entropy(model, batch)
            accelerator.backward(loss * weight)
        if rows:
            total += loss.detach().double().cpu()
    if n_proc > 1:
        total = accelerator.reduce(total.to(accelerator.device), "sum").cpu()
    return float(total) / max(tokens, 1), sum(len(b) for b in step.batches)


def train_seq2seq(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: list[dict] | TokenizedExamples,
    features: np.ndarray | None,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    max_source_length: int = 192,
    max_target_length: int = 96,
    seed: int = 0,
    mixed_precision: str = "no",
    gradient_checkpointing: bool = False,
    resume: bool = True,
    fingerprint_extra: dict | None = None,
    keep_checkpoints: int = 1,
    stop_after_steps: int | None = None,
    desc: str = "sft",
    progress: bool = True,
    tracking: Tracking = NO_TRACKING,
) -> TrainResult:
    """Train ``model`` on (source -> target) ``examples``; writes under ``out_dir``.

    ``out_dir/metrics.jsonl`` and ``out_dir/checkpoints/step_N/``; the final model (or peft
    adapter) and tokenizer go to ``model_dir`` (default ``out_dir/model``). A ``TokenizedExamples``
    set is used as it is (its own length limits); a list is tokenised here. Each metrics row also
    goes to the trackers of ``tracking``; ``progress`` prints progress lines (``aresnb.progress``).
    ``stop_after_steps`` ends the run early as a crash would (tests of resume use it).
    ``fingerprint_extra``: what else a checkpoint must match to be resumed (e.g. the weights under
    a LoRA adapter, which the trainable shapes do not see).
    """
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    model_dir = Path(model_dir) if model_dir is not None else out_dir / "model"
    cfg = train_cfg

    set_seed(seed)
    accelerator = make_accelerator(mixed_precision, tracking=tracking)  # a fresh one per run: it holds the run's objects
    data = examples if isinstance(examples, TokenizedExamples) else \
        TokenizedExamples(tokenizer, examples, max_source_length, max_target_length)
    collate = Collator(tokenizer.pad_token_id, features, _decoder_start(model))
    plan = plan_sft_steps(len(data), cfg.batch_size, cfg.grad_accum, cfg.epochs, seed)
    total_steps, per_epoch = len(plan), steps_per_epoch(len(data), cfg.batch_size, cfg.grad_accum)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    checkpoints = Checkpoints(out_dir / "checkpoints", keep=keep_checkpoints, log=accelerator.print,
                              fingerprint=recipe_fingerprint(cfg, data, total_steps, model,
                                                             {"seed": seed, **(fingerprint_extra or {})}))
    # The scheduler is not prepared (accelerate would step it once per process) but checkpointed.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if not resume:
        checkpoints.discard_all()
    step, _ = checkpoints.resume(accelerator, metrics_path)
    resumed_from = step or None
    tracking.start(accelerator)

    model.train()
    bar = Progress(total_steps, desc, initial=step, unit="steps", enabled=progress and accelerator.is_local_main_process)
    window = _LossWindow()
    for planned in plan[step: stop_after_steps]:
        loss, n_samples = train_step(model, data, collate, planned, accelerator)
        if cfg.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        window.add(loss, n_samples)
        step = planned.index
        shown = {}
        if step % cfg.log_every_steps == 0 or step == total_steps:
            row = {"step": step, "epoch": round(step / per_epoch, 4), **window.flush(), "lr": scheduler.get_last_lr()[0]}
            if accelerator.is_main_process:
                append_jsonl(metrics_path, row)
                accelerator.log(row, step=step)  # the trackers of run.log_with, if any
            shown = {"loss": row["loss"]}
        bar.update(1, **shown)
        if step % cfg.save_every_steps == 0 or step == total_steps or step == stop_after_steps:
            checkpoints.save(accelerator, step)
            window.losses.clear()  # a resumed run logs the same windows as an uninterrupted one
    bar.close()
    tracking.end(accelerator)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    if step >= total_steps and accelerator.is_main_process:
        unwrapped.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    accelerator.wait_for_everyone()
    metrics = read_jsonl(metrics_path)
    return TrainResult(
        model=unwrapped, steps=step, total_steps=total_steps, epochs=cfg.epochs,
        first_loss=metrics[0]["loss"] if metrics else None, last_loss=metrics[-1]["loss"] if metrics else None,
        wall_time_s=time.time() - t_start, samples_per_s=window.samples_per_s(), resumed_from_step=resumed_from,
        trainable_parameters=n_trainable, processes=accelerator.num_processes, metrics=metrics,
    )


def _decoder_start(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        raise ValueError("the model's config has no decoder_start_token_id (a T5-family seq2seq model is expected)")
    return int(start)


# ---- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_seq2seq(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: list[dict],
    features: np.ndarray | None,
    *,
    batch_size: int = 32,
    max_source_length: int = 192,
    max_target_length: int = 96,
) -> dict[str, float]:
    """Teacher-forced mean token loss and next-token accuracy on ``examples`` (cheap val metric)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    data = TokenizedExamples(tokenizer, examples, max_source_length, max_target_length)
    collate = Collator(tokenizer.pad_token_id, features)
    nll, correct, count = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate([data[i] for i in range(start, min(start + batch_size, len(data)))]).items()}
        logits = model(**batch).logits
        mask = batch["labels"] != IGNORE_INDEX
        nll += torch.nn.functional.cross_entropy(logits[mask].float(), batch["labels"][mask], reduction="sum").item()
        correct += (logits.argmax(-1)[mask] == batch["labels"][mask]).sum().item()
        count += int(mask.sum())
    model.train(was_training)
    return {"loss": nll / max(count, 1), "token_accuracy": correct / max(count, 1), "tokens": count}
