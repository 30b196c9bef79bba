"""The one supervised seq2seq trainer: baseline SFT (QCM-E), SFT on corrections, the LoRA answer head.

An example is ``{"source": str, "target": str, "feature_index": int | None}``: the row of the
``features`` array (N, P, D) that holds its image features, or None for zero features.

``train_seq2seq`` runs through ``accelerate`` (CPU here; ``accelerate launch`` for multi-GPU or
DeepSpeed), with AdamW, linear or constant schedule after warm-up, gradient accumulation and
clipping. It appends ``metrics.jsonl`` (step, loss, lr, samples/s), checkpoints every N optimizer
steps (model, optimizer, scheduler, RNG states and the position in the data) and resumes from
the last complete checkpoint of the same recipe and data (:mod:`aresnb.checkpoints`), so a
killed run continues where it was.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from aresnb.checkpoints import Checkpoints, fingerprint
from aresnb.data.prompts import build_source, build_target
from aresnb.io import append_jsonl, read_jsonl
from aresnb.progress import Progress
from aresnb.tracking import NO_TRACKING, Tracking

IGNORE_INDEX = -100  # label positions the loss skips (padding)


# ---- examples and batches ----------------------------------------------------------------------


def make_examples(
    problems: Iterable[dict],
    fmt: str,
    rationales: dict[str, str] | None = None,
    use_caption: bool = True,
    zero_features: bool = False,
) -> list[dict]:
    """One example per problem in prompt format ``fmt``; row i uses row i of the features.

    ``rationales`` (qid -> text) replaces the gold solution: the target for QCM-E (SFT on
    corrections), the rationale in the input for QCMG-A.
    """
    examples = []
    for i, p in enumerate(problems):
        r = rationales.get(p["qid"]) if rationales is not None else None
        if rationales is not None and r is None:
            raise KeyError(f"no rationale for qid {p['qid']!r} (format {fmt})")
        source_r, target_r = (r, None) if fmt == "QCMG-A" else (None, r)
        examples.append({
            "qid": p["qid"],
            "source": build_source(p, fmt, source_r, use_caption=use_caption),
            "target": build_target(p, fmt, target_r),
            "feature_index": None if zero_features else i,
        })
    return examples


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


def encode_batch(
    tokenizer: Any,
    sources: list[str],
    targets: list[str] | None,
    features: np.ndarray | torch.Tensor | None,
    max_source_length: int,
    max_target_length: int,
) -> dict[str, torch.Tensor]:
    """Tokenise a batch: input_ids, attention_mask, labels (pad -> -100) and image_features.

    ``features`` are this batch's rows, (B, P, D), or None (the model then uses zeros).
    """
    enc = tokenizer(sources, max_length=max_source_length, truncation=True, padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if targets is not None:
        lab = tokenizer(targets, max_length=max_target_length, truncation=True, padding=True, return_tensors="pt")
        labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, IGNORE_INDEX)
        batch["labels"] = labels
    if features is not None:
        batch["image_features"] = features.float() if torch.is_tensor(features) else torch.as_tensor(np.asarray(features, dtype=np.float32))
    return batch


class _Tokenized(torch.utils.data.Dataset):
    """Examples tokenised once up front; batches are padded per batch by the collator."""

    def __init__(self, tokenizer: Any, examples: list[dict], max_source_length: int, max_target_length: int):
        if not examples:
            raise ValueError("no training examples")
        for k in ("source", "target"):
            missing = [e.get("qid", i) for i, e in enumerate(examples) if not isinstance(e.get(k), str)]
            if missing:
                raise ValueError(f"examples without a {k!r} string: {missing[:5]}")
        src = tokenizer([e["source"] for e in examples], max_length=max_source_length, truncation=True)["input_ids"]
        tgt = tokenizer([e["target"] for e in examples], max_length=max_target_length, truncation=True)["input_ids"]
        self.rows = [(s, t, e.get("feature_index")) for s, t, e in zip(src, tgt, examples)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple:
        return self.rows[i]


@dataclass
class _Collator:
    pad_id: int
    features: np.ndarray | None

    def __call__(self, rows: list[tuple]) -> dict[str, torch.Tensor]:
        src, tgt, idx = zip(*rows)
        input_ids = _pad(src, self.pad_id)
        labels = _pad(tgt, IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_id).long(), "labels": labels}
        feats = gather_features(self.features, idx)
        if feats is not None:
            batch["image_features"] = feats
        return batch


def _pad(seqs: Sequence[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


# ---- training ----------------------------------------------------------------------------------


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
    metrics: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("model")
        d.pop("metrics")
        return d


def recipe_fingerprint(train_cfg: Any, examples: Sequence[dict], total_steps: int, model: torch.nn.Module,
                       extra: dict) -> str:
    """What a checkpoint must match to be resumed: the recipe, the examples themselves (new
    Teacher corrections change the targets) and the trainable parameters' shapes."""
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
    data = fingerprint([(e["source"], e["target"], e.get("feature_index")) for e in examples])
    return fingerprint(dataclasses.asdict(train_cfg), data, len(examples), total_steps, shapes, extra)


@dataclass
class _LossWindow:
    """Losses since the last metrics row, and the samples seen since training (re)started."""

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


def make_optimizer(model: torch.nn.Module, cfg: Any, total_steps: int) -> tuple[Any, Any]:
    """AdamW on the trainable parameters and the configured schedule (linear or constant) after warm-up."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "linear":
        return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return optimizer, get_constant_schedule_with_warmup(optimizer, warmup)


def train_seq2seq(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: list[dict],
    features: np.ndarray | None,
    train_cfg: Any,
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    max_source_length: int = 192,
    max_target_length: int = 96,
    seed: int = 0,
    mixed_precision: str = "no",
    resume: bool = True,
    keep_checkpoints: int = 1,
    stop_after_steps: int | None = None,
    desc: str = "sft",
    progress: bool = True,
    tracking: Tracking = NO_TRACKING,
) -> TrainResult:
    """Train ``model`` on (source -> target) ``examples``; writes under ``out_dir``.

    ``out_dir/metrics.jsonl`` and ``out_dir/checkpoints/step_N/``; the final model (or peft
    adapter) and tokenizer go to ``model_dir`` (default ``out_dir/model``). Each metrics row also
    goes to the trackers of ``tracking``; ``progress`` prints progress lines (``aresnb.progress``).
    ``stop_after_steps`` ends the run early as a crash would (tests of resume use it).
    """
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    model_dir = Path(model_dir) if model_dir is not None else out_dir / "model"
    cfg = train_cfg

    set_seed(seed)
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),  # same order on resume
        **tracking.accelerator_kwargs(),
    )
    data = _Tokenized(tokenizer, examples, max_source_length, max_target_length)
    # Its own generator: creating an epoch's iterator then draws no numbers from the global RNG,
    # so dropout masks after a resume are the ones the uninterrupted run would have drawn.
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, collate_fn=_Collator(tokenizer.pad_token_id, features),
                        generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)  # accelerate steps at the end of each epoch
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer, scheduler = make_optimizer(model, cfg, total_steps)
    checkpoints = Checkpoints(out_dir / "checkpoints", keep=keep_checkpoints, log=accelerator.print,
                              fingerprint=recipe_fingerprint(cfg, examples, total_steps, model,
                                                             {"seed": seed, "src": max_source_length, "tgt": max_target_length}))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if not resume:
        checkpoints.discard_all()
    step, _ = checkpoints.resume(accelerator, metrics_path)
    resumed_from = step or None
    tracking.start(accelerator)

    model.train()
    bar = Progress(total_steps, desc, initial=step, unit="steps", enabled=progress and accelerator.is_local_main_process)
    window = _LossWindow()
    epoch = step // steps_per_epoch
    while step < total_steps and (stop_after_steps is None or step < stop_after_steps):
        loader.set_epoch(epoch)
        skip = (step - epoch * steps_per_epoch) * cfg.grad_accum
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window.add(loss.item(), batch["input_ids"].shape[0] * accelerator.num_processes)
            if not accelerator.sync_gradients:
                continue
            step += 1
            shown = {}
            if step % cfg.log_every_steps == 0 or step == total_steps:
                row = {"step": step, "epoch": round(step / steps_per_epoch, 4), **window.flush(),
                       "lr": scheduler.get_last_lr()[0]}
                if accelerator.is_main_process:
                    append_jsonl(metrics_path, row)
                    accelerator.log(row, step=step)  # the trackers of run.log_with, if any
                shown = {"loss": row["loss"]}
            bar.update(1, **shown)
            if step % cfg.save_every_steps == 0 or step == total_steps or step == stop_after_steps:
                checkpoints.save(accelerator, step)
                window.losses.clear()  # a resumed run logs the same windows as an uninterrupted one
            if step >= total_steps or step == stop_after_steps:
                break
        epoch += 1
    bar.close()
    tracking.end(accelerator)
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    if step >= total_steps and accelerator.is_main_process:
        unwrapped.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    metrics = read_jsonl(metrics_path)
    return TrainResult(
        model=unwrapped,
        steps=step,
        total_steps=total_steps,
        epochs=cfg.epochs,
        first_loss=metrics[0]["loss"] if metrics else None,
        last_loss=metrics[-1]["loss"] if metrics else None,
        wall_time_s=time.time() - t_start,
        samples_per_s=window.samples_per_s(),
        resumed_from_step=resumed_from,
        trainable_parameters=n_trainable,
        metrics=metrics,
    )


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
    data = _Tokenized(tokenizer, examples, max_source_length, max_target_length)
    collate = _Collator(tokenizer.pad_token_id, features)
    nll, correct, count = 0.0, 0, 0
    for start in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate([data[i] for i in range(start, min(start + batch_size, len(data)))]).items()}
        logits = model(**batch).logits
        mask = batch["labels"] != IGNORE_INDEX
        nll += torch.nn.functional.cross_entropy(logits[mask], batch["labels"][mask], reduction="sum").item()
        correct += (logits.argmax(-1)[mask] == batch["labels"][mask]).sum().item()
        count += int(mask.sum())
    model.train(was_training)
    return {"loss": nll / max(count, 1), "token_accuracy": correct / max(count, 1), "tokens": count}
