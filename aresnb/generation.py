"""Batched generation with the rationale model: greedy or sampled (top-k, temperature), k per prompt.

Prompts are sorted by length before batching (less padding, much faster on CPU) and results are
returned in the input order. Sampling is seeded once per call, so a call is reproducible.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from aresnb.data.prompts import build_source, strip_solution_prefix
from aresnb.sft import encode_batch, gather_features


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    sources: Sequence[str],
    features: np.ndarray | None,
    feature_indices: Sequence[int | None] | None = None,
    *,
    num_samples: int = 1,
    do_sample: bool = False,
    top_k: int = 50,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    max_source_length: int = 512,
    seed: int = 0,
    progress: bool = False,
    desc: str = "generate",
) -> list[list[str]]:
    """``num_samples`` decoded continuations per source (special tokens removed), in input order.

    ``features`` (N, P, D) with ``feature_indices[i]`` the row of source i (default: row i;
    None = zeros). ``model`` may be a rationale model or a peft model wrapping one.
    """
    if feature_indices is None:
        feature_indices = list(range(len(sources)))
    used = [i for i in feature_indices if i is not None]
    if features is not None and used and max(used) >= len(features):
        raise IndexError(f"feature index {max(used)} out of range: {len(features)} feature rows for {len(sources)} sources")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    lengths = [len(ids) for ids in tokenizer(list(sources), max_length=max_source_length, truncation=True)["input_ids"]]
    order = sorted(range(len(sources)), key=lambda i: -lengths[i])
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if do_sample:
        gen_kwargs.update(top_k=top_k, temperature=temperature, num_return_sequences=num_samples)
    out: list[list[str]] = [[] for _ in sources]
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress):
        idx = order[start : start + batch_size]
        feats = gather_features(features, [feature_indices[i] for i in idx])
        batch = encode_batch(tokenizer, [sources[i] for i in idx], None, feats, max_source_length, 0)
        batch = {k: v.to(device) for k, v in batch.items()}
        ids = model.generate(**batch, **gen_kwargs)
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        per = num_samples if do_sample else 1
        for j, i in enumerate(idx):
            got = [t.strip() for t in texts[j * per : (j + 1) * per]]
            out[i] = got if do_sample else got * num_samples  # greedy: k identical copies
    model.train(was_training)
    return out


def generate_rationales(
    model: Any,
    tokenizer: Any,
    problems: Iterable[dict],
    features: np.ndarray | None,
    *,
    num_samples: int = 1,
    do_sample: bool = False,
    top_k: int = 50,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    max_source_length: int = 192,
    seed: int = 0,
    use_caption: bool = True,
    progress: bool = False,
) -> list[dict]:
    """QCM-E rationales: one row per (qid, sample_index), "Solution:" stripped, in problem order.

    ``features`` is row-aligned with ``problems`` (problem i uses row i).
    """
    problems = list(problems)
    sources = [build_source(p, "QCM-E", use_caption=use_caption) for p in problems]
    texts = generate_texts(
        model, tokenizer, sources, features,
        num_samples=num_samples, do_sample=do_sample, top_k=top_k, temperature=temperature,
        max_new_tokens=max_new_tokens, batch_size=batch_size, max_source_length=max_source_length,
        seed=seed, progress=progress, desc="rationales",
    )
    return [
        {"qid": p["qid"], "sample_index": k, "rationale": strip_solution_prefix(t)}
        for p, samples in zip(problems, texts)
        for k, t in enumerate(samples)
    ]
