"""What the supervised trainer eats: prompt-format examples, tokenised once, cut into global batches.

An example is ``{"source": str, "target": str, "feature_index": int | None}``: the row of the
``features`` array (N, P, D) that holds its image features, or None for zero features.
:class:`TokenizedExamples` tokenises a set once; heads that train on the same sources share it
(:meth:`TokenizedExamples.without_features` is the image ablation's view of the same tokens).

:func:`plan_sft_steps` is the order of training: each epoch a seeded permutation (the one
accelerate's seedable sampler draws, ``torch.randperm`` under seed + epoch) cut into global
batches of ``batch_size``, ``grad_accum`` batches an optimizer step. Every process derives the
same plan and takes its slice of every batch, so N processes make the optimizer steps of one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from aresnb.data.prompts import build_source, build_target
from aresnb.model.batching import gather_features, pad_ids
from aresnb.model.checkpoints import fingerprint

IGNORE_INDEX = -100  # label positions the loss skips (padding)


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


class TokenizedExamples(torch.utils.data.Dataset):
    """Examples tokenised once up front; batches are padded per batch by :class:`Collator`.

    ``digest`` identifies the content (texts, feature rows, length limits) for checkpoint
    fingerprints without hashing the texts again.
    """

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
        self.lengths = (max_source_length, max_target_length)
        self.digest = fingerprint([(e["source"], e["target"], e.get("feature_index")) for e in examples],
                                  max_source_length, max_target_length)

    @classmethod
    def _view(cls, rows: list[tuple], lengths: tuple[int, int], digest: str) -> "TokenizedExamples":
        view = cls.__new__(cls)
        view.rows, view.lengths, view.digest = rows, lengths, digest
        return view

    def without_features(self) -> "TokenizedExamples":
        """The same tokens with zero image features (the image ablation), sharing the token lists."""
        return self._view([(s, t, None) for s, t, _ in self.rows], self.lengths, fingerprint(self.digest, "no-image"))

    def target_tokens(self, index: int) -> int:
        return len(self.rows[index][1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple:
        return self.rows[i]


@dataclass
class Collator:
    """Rows -> a padded batch; ``decoder_input_ids`` are the labels shifted right (T5's ``_shift_right``)."""

    pad_id: int
    features: np.ndarray | None
    decoder_start_id: int | None = None  # None: leave decoder inputs to the model (labels only)

    def __call__(self, rows: list[tuple]) -> dict[str, torch.Tensor]:
        src, tgt, idx = zip(*rows)
        input_ids = pad_ids(src, self.pad_id)
        labels = pad_ids(tgt, IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": (input_ids != self.pad_id).long(), "labels": labels}
        if self.decoder_start_id is not None:
            shifted = torch.full_like(labels, self.pad_id)
            shifted[:, 0] = self.decoder_start_id
            shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE_INDEX, self.pad_id)
            batch["decoder_input_ids"] = shifted
        feats = gather_features(self.features, idx)
        if feats is not None:
            batch["image_features"] = feats
        return batch


# ---- the plan of optimizer steps ---------------------------------------------------------------


@dataclass(frozen=True)
class SFTStep:
    """One optimizer step: its global batches (example indices), ``grad_accum`` of them at most."""

    index: int  # 1-based over the whole run
    epoch: int  # 0-based
    batches: tuple[tuple[int, ...], ...]


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(n_examples / batch_size) / grad_accum)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch: the permutation accelerate's seedable sampler draws."""
    return torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def plan_sft_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float, seed: int) -> list[SFTStep]:
    """``ceil(epochs * steps_per_epoch)`` optimizer steps (a fractional last epoch stops early);
    the last step of an epoch takes the batches that are left."""
    per_epoch = steps_per_epoch(n_examples, batch_size, grad_accum)
    total = max(1, math.ceil(epochs * per_epoch))
    steps: list[SFTStep] = []
    epoch = 0
    while len(steps) < total:
        order = epoch_order(n_examples, seed, epoch)
        batches = [tuple(order[i: i + batch_size]) for i in range(0, n_examples, batch_size)]
        for k in range(0, len(batches), grad_accum):
            if len(steps) == total:
                break
            steps.append(SFTStep(index=len(steps) + 1, epoch=epoch, batches=tuple(batches[k: k + grad_accum])))
        epoch += 1
    return steps


def process_rows(batch: Sequence[int], rank: int, num_processes: int) -> list[int]:
    """This process's contiguous slice of a global batch (may be empty when the batch is small)."""
    return [int(i) for i in np.array_split(np.asarray(batch, dtype=np.int64), num_processes)[rank]]
