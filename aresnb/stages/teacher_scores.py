"""Stage 03: sample k rationales per train problem, split them, have the Teacher score each sentence.

Writes ``round_<i>/03_teacher_scores/samples.parquet`` (one row per (qid, sample_index); columns
in docs/architecture.md) and ``summary.json``. What was sampled is kept exactly: the token ids as
generated, whether EOS ended the sample or ``max_new_tokens`` cut it, the sampling policy's log-prob
of every token, and the index of the token that ends each sentence (a cut sample keeps its
unfinished last sentence, which ends at its last token). PPO (stage 04) trains on these ids.

A killed run resumes without one repeated Teacher call and without resampling what was kept:
``rollouts.jsonl`` grows batch by batch (each batch seeded on its own, so the resumed sampling
is the one an uninterrupted run makes) and every reply is in the cache the moment it arrives.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aresnb.checkpoints import dir_signature, fingerprint
from aresnb.checks import check_scored_samples
from aresnb.data.prompts import solution_start
from aresnb.generation import length_sorted_batches, sample_responses
from aresnb.io import append_jsonl, read_json, read_jsonl, write_json, write_jsonl
from aresnb.models import load_rationale_model
from aresnb.paths import TEACHER_SCORES, RunPaths
from aresnb.progress import Progress, say
from aresnb.sentences import sentence_end_tokens, split_sentences
from aresnb.stages import stored_summary
from aresnb.stages.data import load_features, load_problems
from aresnb.tokenizer import load_tokenizer
from aresnb.teacher import PROMPT_VERSION, ProblemView, ScoreItem, open_teacher, prompt_preview

STAGE = TEACHER_SCORES
SCORE_BINS = [round(0.1 * i, 1) for i in range(11)]


def select_problems(n_total: int, max_problems: int | None, seed: int) -> list[int]:
    """Row indices of the train problems sampled this round (seeded subset, sorted)."""
    if max_problems is None or max_problems >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_total, size=max_problems, replace=False).tolist())


def rollouts_fingerprint(policy_dir: Path, cfg: Any, round_index: int, qids: list[str]) -> str:
    """Identity of one set of rollouts: the policy weights' files, the rollout section, the qids."""
    return fingerprint(str(policy_dir), dir_signature(policy_dir), asdict(cfg.rollout), cfg.model.max_source_length,
                       cfg.run.seed, round_index, qids)


def sample_rationales(cfg: Any, paths: RunPaths, round_index: int, problems: list[dict],
                      indices: list[int]) -> tuple[list[dict], bool]:
    """k sampled rationales per problem from the policy entering this round; (rows, all reused).

    Batches already in ``rollouts.jsonl`` (same fingerprint) are kept; sampling resumes after them.
    """
    policy_dir = Path(paths.policy_entering_round(round_index))
    if not policy_dir.exists():
        raise FileNotFoundError(f"stage 03 round {round_index}: the policy {policy_dir} does not exist; run the earlier stages first")
    fp = rollouts_fingerprint(policy_dir, cfg, round_index, [p["qid"] for p in problems])
    saved = paths.rollouts_file(round_index)
    lines = read_jsonl(saved, tolerate_partial_last_line=True)
    kept = lines[1:] if lines and lines[0].get("fingerprint") == fp else []
    r = cfg.rollout
    tokenizer = load_tokenizer(policy_dir)
    n_batches = len(length_sorted_batches([0] * len(problems), r.batch_size))
    done = len({row["batch"] for row in kept})
    if done == n_batches:
        return kept, True
    if not kept:
        write_jsonl(saved, [{"fingerprint": fp}])
    features = load_features(paths, "train")[indices]
    model = load_rationale_model(policy_dir, feature_shape=features.shape[1:])
    progress = Progress(n_batches, f"sampling {r.samples_per_problem} rationales per problem", initial=done,
                        unit="batches")
    for b, rows in sample_responses(model, tokenizer, problems, features, num_samples=r.samples_per_problem,
                                    top_k=r.top_k, temperature=r.temperature, max_new_tokens=r.max_new_tokens,
                                    batch_size=r.batch_size, max_source_length=cfg.model.max_source_length,
                                    seed=cfg.run.seed * 1000 + round_index, use_caption=cfg.data.use_caption,
                                    skip_batches=done):
        for row in rows:
            row.update(batch=b, **sentence_layout(tokenizer, row))
        append_jsonl(saved, rows)  # one write per batch: a kill loses at most the batch in flight
        kept += rows
        progress.update(1)
    return kept, False


def sentence_layout(tokenizer: Any, row: dict) -> dict:
    """The rationale's sentences, their character spans and the token that ends each one."""
    spans = split_sentences(row["rationale"])
    text = tokenizer.decode(row["response_ids"], skip_special_tokens=True)
    return {"sentences": [x.text for x in spans], "sentence_spans": [[x.start, x.end] for x in spans],
            "sentence_end_tokens": sentence_end_tokens(tokenizer, row["response_ids"], spans, solution_start(text))}


SAMPLE_COLUMNS = ("qid", "sample_index", "rationale", "sentences", "sentence_spans", "scores", "dropped",
                  "drop_reason", "raw_reply", "drop_detail", "cached", "response_ids", "ended", "sample_logprobs",
                  "sentence_end_tokens")


def score_samples(teacher: Any, problems: dict[str, dict], samples: list[dict]) -> pd.DataFrame:
    """Score every sample's sentences; one row per sample (the columns of samples.parquet)."""
    views = {qid: ProblemView.from_row(row) for qid, row in problems.items()}
    progress = Progress(len(samples), "Teacher scores", unit="samples")
    results = teacher.score_sentences([ScoreItem(views[s["qid"]], list(s["sentences"])) for s in samples],
                                      progress=progress.callback())
    rows = [{**s, "sample_index": int(s["sample_index"]), "scores": res.scores, "dropped": res.dropped,
             "drop_reason": res.drop_reason, "raw_reply": res.raw_reply, "drop_detail": res.detail,
             "cached": res.cached} for s, res in zip(samples, results)]
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def sample_signal(df: pd.DataFrame) -> dict:
    """Do the k samples of one prompt differ in score? PPO learns only from such differences."""
    means = df[~df["dropped"]].assign(mean=lambda d: [float(np.mean(s)) for s in d["scores"]])
    spread = means.groupby("qid")["mean"].agg(lambda x: float(np.std(x)) if len(x) > 1 else float("nan")).dropna()
    return {"prompts": int(len(spread)), "prompts_with_varying_scores": float((spread > 1e-9).mean()) if len(spread) else None,
            "mean_within_prompt_std": float(spread.mean()) if len(spread) else None}


def score_summary(df: pd.DataFrame) -> dict:
    kept = df[~df["dropped"]]
    scores = np.array([x for s in kept["scores"] for x in s], dtype=float)
    hist = {f"{b:.1f}": int(np.sum(np.isclose(scores, b))) for b in SCORE_BINS}
    return {
        "samples": len(df), "scored": len(kept), "dropped": int(df["dropped"].sum()),
        "dropped_by_reason": {str(k): int(v) for k, v in df.loc[df["dropped"], "drop_reason"].value_counts().items()},
        "sentences": int(len(scores)),
        "sentences_per_sample": float(np.mean([len(s) for s in df["sentences"]])) if len(df) else 0.0,
        "score_mean": float(scores.mean()) if len(scores) else None,
        "score_std": float(scores.std()) if len(scores) else None,
        "score_median": float(np.median(scores)) if len(scores) else None,
        "reward_mean": float(scores.mean() - 0.5) if len(scores) else None,
        "share_zero": float(np.mean(scores == 0.0)) if len(scores) else None,
        "share_one": float(np.mean(scores == 1.0)) if len(scores) else None,
        "score_histogram": hist,
        "replies_from_cache": int(df["cached"].sum()),
        "cut_samples": int((~df["ended"].astype(bool)).sum()),  # no EOS: stopped by max_new_tokens
        "mean_response_tokens": float(np.mean([len(x) for x in df["response_ids"]])) if len(df) else 0.0,
    }


def _round_problems(cfg: Any, paths: RunPaths, round_index: int) -> tuple[list[int], list[dict]]:
    """The train problems sampled this round: (row indices, rows)."""
    train = load_problems(paths)["train"]
    indices = select_problems(len(train), cfg.rollout.max_problems, cfg.run.seed + round_index)
    return indices, train.select(indices).to_list()


def run(cfg: Any, paths: RunPaths, round_index: int | None = 1) -> dict:
    """Sample, split, score; write ``samples.parquet`` and ``summary.json``; return the summary."""
    if (stored := stored_summary(cfg, paths, STAGE, round_index)) is not None:
        return stored
    t0 = time.monotonic()
    paths.stage_dir(STAGE, round_index)
    indices, problems = _round_problems(cfg, paths, round_index)
    samples, reused = sample_rationales(cfg, paths, round_index, problems, indices)
    t_gen = time.monotonic() - t0
    by_qid = {p["qid"]: p for p in problems}
    with open_teacher(cfg, paths) as teacher:
        df = score_samples(teacher, by_qid, samples)
        usage = teacher.usage()
    df.to_parquet(paths.samples_file(round_index), index=False)
    summary = {
        "stage": STAGE, "round": round_index, "problems": len(problems),
        "samples_per_problem": cfg.rollout.samples_per_problem, **score_summary(df), "signal": sample_signal(df),
        "teacher": {"model": cfg.teacher.model, "prompt_version": PROMPT_VERSION,
                    "endpoint": "local:" + cfg.teacher.local_backend if cfg.teacher.serve_local else cfg.teacher.base_url,
                    **{k: v for k, v in usage.items() if k != "model"}},
        "rollouts_reused": reused, "generation_s": round(t_gen, 3),
        "scoring_s": round(time.monotonic() - t0 - t_gen, 3), "wall_time_s": round(time.monotonic() - t0, 3),
    }
    write_json(paths.summary_file(STAGE, round_index), summary)
    check_scored_samples(summary, cfg.teacher.max_drop_share, paths.samples_file(round_index))
    say(f"Teacher scores: {summary['sentences']} sentences of {summary['scored']} samples, mean "
        f"{summary['score_mean']:.3f}; {summary['dropped']} samples dropped")
    return summary


def request_preview() -> str:
    """The score request the Teacher gets (system and user message, placeholders for the problem)."""
    return prompt_preview("score")


def load(cfg: Any, paths: RunPaths, round_index: int | None = 1) -> dict:
    """The finished round: summary, the samples (DataFrame), the problems by qid."""
    _, problems = _round_problems(cfg, paths, round_index)
    return {
        "summary": read_json(paths.summary_file(STAGE, round_index)),
        "samples": pd.read_parquet(paths.samples_file(round_index)),
        "problems": {p["qid"]: p for p in problems},
    }
