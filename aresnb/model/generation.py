"""Batched generation with the rationale model: greedy or sampled (top-k, temperature), k per prompt.

Prompts are sorted by length before batching (less padding, much faster on CPU) and results are
returned in the input order. ``generate_texts`` is seeded once per call; ``sample_responses``
(the RL buffer) once per batch, so a resumed sampling draws exactly what an uninterrupted one
would, and it keeps what was sampled: the token ids, whether EOS ended the sample, and the
sampling policy's log-probability of every token.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable, Iterator, Sequence

import numpy as np
import torch

from aresnb.data.prompts import build_source, strip_solution_prefix
from aresnb.model.batching import gather_features, pad_ids
from aresnb.model.distributed import autocast
from aresnb.model.tensor_ops import pad, selective_log_softmax
from aresnb.progress import Progress


def _tokenized_sources(tokenizer: Any, sources: Sequence[str], max_source_length: int) -> list[list[int]]:
    """Each source tokenised once: its length orders the batches, its ids fill them."""
    return tokenizer(list(sources), max_length=max_source_length, truncation=True)["input_ids"]


def _encoder_batch(ids: Sequence[list[int]], pad_id: int, feats: torch.Tensor | None, device: Any) -> dict[str, torch.Tensor]:
    input_ids = pad_ids(ids, pad_id)
    batch = {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long()}
    if feats is not None:
        batch["image_features"] = feats
    return {k: v.to(device) for k, v in batch.items()}


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
    mixed_precision: str = "no",
    progress: bool = False,
    desc: str = "generate",
) -> list[list[str]]:
    """``num_samples`` decoded continuations per source (special tokens removed), in input order.

    ``features`` (N, P, D) with ``feature_indices[i]`` the row of source i (default: row i;
    None = zeros). ``model`` may be a rationale model or a peft model wrapping one; it runs on
    the device it is on, under ``mixed_precision``'s autocast.
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
    ids = _tokenized_sources(tokenizer, sources, max_source_length)
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if do_sample:
        gen_kwargs.update(top_k=top_k, temperature=temperature, num_return_sequences=num_samples)
    out: list[list[str]] = [[] for _ in sources]
    batches = length_sorted_batches([len(x) for x in ids], batch_size)
    bar = Progress(len(batches), desc, unit="batches", enabled=progress)
    for idx in batches:
        feats = gather_features(features, [feature_indices[i] for i in idx])
        batch = _encoder_batch([ids[i] for i in idx], tokenizer.pad_token_id, feats, device)
        with autocast(mixed_precision, device):
            generated = model.generate(**batch, **gen_kwargs)
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        per = num_samples if do_sample else 1
        for j, i in enumerate(idx):
            got = [t.strip() for t in texts[j * per : (j + 1) * per]]
            out[i] = got if do_sample else got * num_samples  # greedy: k identical copies
        bar.update(1)
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
    mixed_precision: str = "no",
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
        seed=seed, mixed_precision=mixed_precision, progress=progress, desc="rationales",
    )
    return [
        {"qid": p["qid"], "sample_index": k, "rationale": strip_solution_prefix(t)}
        for p, samples in zip(problems, texts)
        for k, t in enumerate(samples)
    ]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by decreasing length, cut into batches (the same for the same lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def split_response(row: Sequence[int], eos_token_id: int) -> tuple[list[int], bool]:
    """One generated row (decoder start first) -> (the sampled tokens up to and with EOS, ended).

    A row without EOS ran to ``max_new_tokens``: every token after the start was sampled (a
    sampled pad token is a token like any other, so padding is recognised by EOS, not by id).
    """
    ids = [int(t) for t in row[1:]]
    if eos_token_id in ids:
        return ids[: ids.index(eos_token_id) + 1], True
    return ids, False


@torch.no_grad()
def response_logprobs(model: Any, batch: dict[str, torch.Tensor], responses: Sequence[Sequence[int]],
                      decoder_start_token_id: int, pad_token_id: int, temperature: float) -> list[list[float]]:
    """log pi(y_t | x, y_<t) of each response under ``model`` at ``temperature`` (teacher forcing).

    ``batch`` holds the encoder inputs, one row per response. This is the full softmax at the
    sampling temperature: the probability PPO's ratio uses (top-k truncation is the sampler's).
    """
    tensors = [torch.tensor(r, dtype=torch.long) for r in responses]
    decoder_in = [torch.tensor([decoder_start_token_id] + list(r[:-1]), dtype=torch.long) for r in responses]
    labels = pad(tensors, padding_value=pad_token_id).to(batch["input_ids"].device)
    mask = pad([torch.ones_like(t) for t in tensors], padding_value=0).to(labels.device)
    logits = model(**batch, decoder_input_ids=pad(decoder_in, padding_value=pad_token_id).to(labels.device),
                   decoder_attention_mask=mask).logits
    logprobs = selective_log_softmax(logits.float(), labels, temperature=temperature)
    return [logprobs[i, : len(r)].tolist() for i, r in enumerate(responses)]


@torch.no_grad()
def sample_responses(
    model: Any,
    tokenizer: Any,
    problems: Sequence[dict],
    features: np.ndarray | None,
    *,
    num_samples: int,
    top_k: int = 50,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    batch_size: int = 32,
    max_source_length: int = 192,
    seed: int = 0,
    use_caption: bool = True,
    mixed_precision: str = "no",
    batches: Collection[int] | None = None,
) -> Iterator[tuple[int, list[dict]]]:
    """(batch index, rows) per length-sorted batch of problems: ``num_samples`` sampled QCM-E
    rationales each, as rows ``{qid, sample_index, rationale, response_ids, ended, sample_logprobs}``.

    ``features`` is row-aligned with ``problems``. Batch b is sampled under ``torch.manual_seed``
    of (seed, b), so which process samples it, and after what, changes nothing: ``batches``
    (default: all) picks the ones to sample, to resume after those kept or to share the batches
    out to processes.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    start_id, pad_id, eos_id = model.config.decoder_start_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = _tokenized_sources(tokenizer, [build_source(p, "QCM-E", use_caption=use_caption) for p in problems],
                             max_source_length)
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": True, "top_k": top_k, "temperature": temperature,
                  "num_return_sequences": num_samples}
    wanted = None if batches is None else set(batches)
    for b, idx in enumerate(length_sorted_batches([len(x) for x in ids], batch_size)):
        if wanted is not None and b not in wanted:
            continue
        torch.manual_seed(seed * 1_000_003 + b)
        batch = _encoder_batch([ids[i] for i in idx], pad_id, gather_features(features, idx), device)
        with autocast(mixed_precision, device):
            rows = model.generate(**batch, **gen_kwargs)
            responses = [split_response(r, eos_id) for r in rows.tolist()]
            repeated = {k: v.repeat_interleave(num_samples, dim=0) for k, v in batch.items()}  # generate's order
            logprobs = response_logprobs(model, repeated, [r for r, _ in responses], start_id, pad_id, temperature)
        out = []
        for j, ((resp, ended), lp) in enumerate(zip(responses, logprobs)):
            problem = problems[idx[j // num_samples]]
            text = tokenizer.decode(resp, skip_special_tokens=True)
            out.append({"qid": problem["qid"], "sample_index": j % num_samples, "rationale": strip_solution_prefix(text),
                        "response_ids": resp, "ended": ended, "sample_logprobs": lp})
        yield b, out
    model.train(was_training)
