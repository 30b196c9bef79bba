"""The PPO buffer: what stage 03 sampled, as padded tensors, and the plan of optimizer steps over it.

ARES trains on ONE buffer per round, sampled by the policy entering the round: ``ppo_epochs``
passes over it, each pass a fresh shuffle cut into optimizer steps of ``batch_size`` sequences
(global, across processes; the last step of a pass takes what is left). The k samples of a
prompt stay together (a micro-batch encodes their common source once), and, as Hugging Face's
``group_by_length``, the shuffled pass is sorted by response length in windows of
``sort_window`` steps before it is cut into steps and micro-batches, so a micro-batch holds
responses of similar length (less padding). The micro-batches are dealt round-robin to the
processes. Every process derives the same plan from the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from aresnb.model.tensor_ops import pad


@dataclass
class PPOSample:
    """One sampled rationale. ``scores`` is None when the Teacher's reply was dropped."""

    qid: str
    sample_index: int
    source_ids: list[int]
    response_ids: list[int]  # the tokens as sampled (decoder start excluded); EOS last when ``ended``
    sentence_end_indices: list[int]  # index into response_ids of each sentence's last token
    scores: Optional[list[float]]
    ended: bool = True  # False: cut at max_new_tokens, no EOS
    dropped: bool = False
    feature_row: Optional[int] = None  # row of the features array (multimodal policies)
    text: str = ""  # the rationale, for text metrics
    sample_logprobs: Optional[list[float]] = None  # the sampler's log-probs (stage 03), to check alignment


def split_dropped(samples: Sequence[PPOSample]) -> tuple[list[PPOSample], int]:
    """Samples that can train (reply kept, one score per sentence) and the count left out."""
    kept = [
        s for s in samples
        if not s.dropped and s.scores is not None and len(s.scores) == len(s.sentence_end_indices) and s.response_ids
    ]
    return kept, len(samples) - len(kept)


ENCODER_KEYS = ("input_ids", "attention_mask")
DECODER_KEYS = ("decoder_input_ids", "decoder_attention_mask", "response_ids", "mask")


class Buffer:
    """The kept samples as right-padded CPU tensors, one row per sample, plus the ragged data."""

    def __init__(self, samples: Sequence[PPOSample], pad_token_id: int, decoder_start_token_id: int,
                 features: np.ndarray | None = None):
        self.samples = list(samples)
        source = [torch.tensor(s.source_ids, dtype=torch.long) for s in samples]
        response = [torch.tensor(s.response_ids, dtype=torch.long) for s in samples]
        decoder_in = [torch.tensor([decoder_start_token_id] + s.response_ids[:-1], dtype=torch.long) for s in samples]
        self.tensors = {
            "input_ids": pad(source, padding_value=pad_token_id),
            "attention_mask": pad([torch.ones_like(t) for t in source], padding_value=0),
            "decoder_input_ids": pad(decoder_in, padding_value=pad_token_id),
            "response_ids": pad(response, padding_value=pad_token_id),
            "mask": pad([torch.ones_like(t) for t in response], padding_value=0),
        }
        self.tensors["decoder_attention_mask"] = self.tensors["mask"]
        self.features = features
        if features is not None and any(s.feature_row is None for s in samples):
            raise ValueError("features were given but a sample has no feature_row")
        self.lengths = [len(s.response_ids) for s in samples]
        # samples with the same prompt share a source: one encoder pass serves them all
        keys = {}
        self.groups = [keys.setdefault((s.qid, tuple(s.source_ids), s.feature_row), len(keys)) for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tensors["mask"].shape)  # type: ignore[return-value]

    def batch(self, rows: Sequence[int], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The model inputs of ``rows``, padding beyond their longest source/response cut off.

        Encoder inputs hold each distinct source once; ``source_index[i]`` is row i's source.
        """
        rows = list(rows)
        first = {}
        for i in rows:
            first.setdefault(self.groups[i], i)
        sources = list(first.values())
        position = {g: k for k, g in enumerate(first)}
        sub = {k: v[torch.as_tensor(sources if k in ENCODER_KEYS else rows, dtype=torch.long)]
               for k, v in self.tensors.items()}
        src_len = max(1, int(sub["attention_mask"].sum(1).max()))
        resp_len = max(1, int(sub["mask"].sum(1).max()))
        for k in ENCODER_KEYS:
            sub[k] = sub[k][:, :src_len]
        for k in DECODER_KEYS:
            sub[k] = sub[k][:, :resp_len]
        sub["source_index"] = torch.as_tensor([position[self.groups[i]] for i in rows], dtype=torch.long)
        if self.features is not None:
            sub["image_features"] = torch.as_tensor(
                np.asarray(self.features[[self.samples[i].feature_row for i in sources]]), dtype=torch.float32)
        return {k: v.to(device) for k, v in sub.items()}


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer step of the plan, as one process sees it."""

    index: int  # 1-based over the whole run
    epoch: int  # 0-based pass over the buffer
    sequences: tuple[int, ...]  # every sequence of the step (all processes)
    micro_batches: tuple[tuple[int, ...], ...]  # this process's; () = nothing left for it (a zero-weight pass)
    tokens: int  # response tokens of the whole step: what the step's loss is divided by


def plan_steps(lengths: Sequence[int], batch_size: int, micro_batch_size: int, epochs: int, seed: int,
               num_processes: int = 1, process_index: int = 0, sort_window: int = 1,
               groups: Sequence[int] | None = None) -> list[OptimizerStep]:
    """``ceil(n / batch_size) * epochs`` optimizer steps over a buffer of ``len(lengths)`` sequences.

    ``groups[i]`` is sequence i's prompt (default: its own): a prompt's sequences stay together.
    ``sort_window`` steps' worth of the shuffled pass are sorted by length together (1: each step
    on its own). Every process gets the same number of micro-batches per step (DDP reduces
    gradients on the last one of each), at most ``micro_batch_size`` sequences each.
    """
    n = len(lengths)
    groups = list(range(n)) if groups is None else list(groups)
    members: dict[int, list[int]] = {}
    for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
        members.setdefault(groups[i], []).append(i)
    longest = {g: lengths[m[0]] for g, m in members.items()}
    steps, index = [], 0
    for epoch in range(epochs):
        rng = np.random.default_rng([seed, epoch])
        order = [list(members)[k] for k in rng.permutation(len(members))]
        sequences, window = [], []
        for g in order + [None]:  # None flushes the last window
            if g is not None:
                window.append(g)
            if window and (g is None or sum(len(members[x]) for x in window) >= batch_size * sort_window):
                sequences += [i for x in sorted(window, key=lambda x: (-longest[x], x)) for i in members[x]]
                window = []
        for start in range(0, n, batch_size):
            chunk = sequences[start: start + batch_size]
            per_process = math.ceil(math.ceil(len(chunk) / micro_batch_size) / num_processes)
            parts = [tuple(int(i) for i in p) for p in np.array_split(np.array(chunk, dtype=np.int64),
                                                                     per_process * num_processes)]
            index += 1
            steps.append(OptimizerStep(index=index, epoch=epoch, sequences=tuple(chunk),
                                       micro_batches=tuple(parts[process_index::num_processes]),
                                       tokens=int(sum(lengths[i] for i in chunk))))
    return steps


def padding_share(buffer: Buffer, micro_batches: Sequence[Sequence[int]]) -> float:
    """Share of decoder positions that are padding when ``micro_batches`` are run as planned."""
    real = total = 0
    for mb in micro_batches:
        if mb:
            lengths = [buffer.lengths[i] for i in mb]
            real += sum(lengths)
            total += max(lengths) * len(lengths)
    return 1.0 - real / total if total else 0.0


def buffer_digest(samples: Sequence[PPOSample]) -> list[Any]:
    """What identifies a buffer's content (for checkpoint fingerprints)."""
    return [(s.qid, s.sample_index, s.response_ids, s.scores, s.sentence_end_indices) for s in samples]
