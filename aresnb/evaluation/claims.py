"""What rationales claim, checked against the synthetic records: the shares of true, false, neutral
and unverifiable sentences and of correct conclusions, overall and per problem family.

This is the diagnostic that says *why* a judge prefers one model's rationales: fewer wrong facts,
more true ones, the right conclusion more often. It needs ``image_record`` (the embedded synthetic
data); on real data there is no ground truth to check sentences against and it returns None.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

from aresnb.data.synthetic_grader import FALSE, NEUTRAL, TRUE, UNVERIFIABLE, conclusion_verdict, grade_sentence
from aresnb.text.sentences import sentence_texts

GRADES = (TRUE, FALSE, NEUTRAL, UNVERIFIABLE)


def _shares(counts: dict, n_rationales: int, correct: int, concluded: int) -> dict:
    sentences = sum(counts[g] for g in GRADES)
    out = {"rationales": n_rationales, "sentences": sentences}
    out.update({f"{g}_share": counts[g] / sentences if sentences else None for g in GRADES})
    out["correct_conclusion_share"] = correct / n_rationales if n_rationales else None
    out["no_conclusion_share"] = (n_rationales - concluded) / n_rationales if n_rationales else None
    return out


def claim_shares(rationales: Mapping[str, str], problems: Sequence[Mapping]) -> dict | None:
    """{"all": shares, "by_family": {family: shares}} of ``rationales`` ({qid: text}) on ``problems``."""
    if not any(p.get("image_record") for p in problems):
        return None
    tallies: dict[str, dict] = {}
    for p in problems:
        if p["qid"] not in rationales or not p.get("image_record"):
            continue
        record = p["image_record"]
        family = _family(record)
        sentences = sentence_texts(rationales[p["qid"]])
        for key in ("all", family):
            t = tallies.setdefault(key, {"counts": dict.fromkeys(GRADES, 0), "n": 0, "correct": 0, "concluded": 0})
            for s in sentences:
                t["counts"][grade_sentence(s, record)] += 1
            verdict = conclusion_verdict(sentences, record)
            t["n"] += 1
            t["correct"] += verdict is True
            t["concluded"] += verdict is not None
    shares = {k: _shares(t["counts"], t["n"], t["correct"], t["concluded"]) for k, t in tallies.items()}
    return {"all": shares.pop("all", None), "by_family": dict(sorted(shares.items()))}


def _family(record: str | Mapping) -> str:
    rec = json.loads(record) if isinstance(record, str) else record
    return rec.get("family") or rec.get("kind") or "unknown"


def claim_counts(rationale: str, record: str | Mapping) -> dict[str, int]:
    """One rationale's sentences by grade (``true``, ``false``, ...) and in all (``sentences``): the
    per-problem counts behind :func:`claim_shares`, for intervals that resample problems."""
    counts = dict.fromkeys(GRADES, 0)
    sentences = sentence_texts(rationale)
    for s in sentences:
        counts[grade_sentence(s, record)] += 1
    return {**counts, "sentences": len(sentences)}
