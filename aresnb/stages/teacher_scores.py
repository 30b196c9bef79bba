"""Stage 03: sample k rationales per train problem, split them, have the Teacher score each sentence.

Writes ``round_<i>/03_teacher_scores/samples.parquet`` (one row per (qid, sample_index); columns
in docs/architecture.md) and ``summary.json``. What was sampled is kept exactly: the token ids as
generated, whether EOS ended the sample or ``max_new_tokens`` cut it, the sampling policy's log-prob
of every token, and the index of the token that ends each sentence. PPO (stage 04) trains on these
ids. Where sentences end is ``teacher.sentence_rules``: ``aresnb`` splits the text
(:mod:`aresnb.text.sentences`; a cut sample keeps its unfinished last sentence, ended by its last token),
``paper`` applies ARES's rules to the T5 token ids (:mod:`aresnb.text.paper_sentences`; an unfinished
last sentence is ended by ``</s>``, a cut sample's tail is no sentence). Either way the Teacher
scores exactly the sentences whose end tokens PPO rewards.

The sampling is the heavy step (:mod:`aresnb.stages.driver`): with ``run.num_processes`` > 1 the
length-sorted batches of problems are shared out to the launched processes, each problem sampled
exactly once; every batch is seeded on its own, so N processes sample exactly what one does.
A killed run resumes without one repeated Teacher call and without resampling what was kept:
each process's ``rollouts.rank<r>.jsonl`` grows batch by batch, and the complete batches are
merged into ``rollouts.jsonl`` (in batch order) before scoring and when the stage starts again;
every reply is in the cache the moment it arrives.

Sampling and scoring overlap: a batch goes to the Teacher (a bounded queue of requests,
``Teacher.stream``) as soon as a process has written its last row, while the next batches are
generated; the summary reports ``generation_s``, ``scoring_s`` (first request to last reply),
``scoring_after_sampling_s`` and the total ``wall_time_s``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from aresnb.config import Config
from aresnb.io import append_jsonl, read_json, write_jsonl
from aresnb.model.distributed import default_device, process_rank, shard
from aresnb.model.generation import sample_responses
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.tokenizer import load_tokenizer
from aresnb.paths import TEACHER_SCORES, RunPaths
from aresnb.progress import Progress, say
from aresnb.rl.rollouts import (ShardTail, complete_batches, merge_rollouts, read_rollouts, rows_per_batch,
                                sentence_layout)
from aresnb.stages.checks import check_scored_samples
from aresnb.stages.driver import StageRun, drive, stage_run
from aresnb.teacher import PROMPT_VERSION, ProblemView, ScoreItem, endpoint_label, open_teacher, prompt_preview
from aresnb.text.paper_sentences import T5Pieces

STAGE = TEACHER_SCORES
SCORE_BINS = [round(0.1 * i, 1) for i in range(11)]


def select_problems(n_total: int, max_problems: int | None, seed: int) -> list[int]:
    """Row indices of the train problems sampled this round (seeded subset, sorted)."""
    if max_problems is None or max_problems >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_total, size=max_problems, replace=False).tolist())


def rollouts_key(run: StageRun, qids: list[str]) -> str:
    """Identity of one set of rollouts (the first line of every rollouts file): the step's inputs
    key over the rollout section (not the Teacher's: a new Teacher re-scores what was sampled) and
    the sentence rules (the rows carry their sentence ends)."""
    return run.inputs_key(run.cfg.model.max_source_length, run.cfg.teacher.sentence_rules, qids, sections=("rollout",))


def sampled_batches(run: StageRun, problems: list[dict], stats: dict) -> Iterator[list[dict]]:
    """k sampled rationales per problem from the policy entering this round, one batch at a time.

    Batches already kept (same fingerprint) come first, as saved. The heavy step samples the others
    (on ``run.num_processes`` processes, in a thread of this one so that the caller can score
    meanwhile); each batch is yielded as soon as its process has written all its rows. At the end
    the shards are merged into ``rollouts.jsonl``. ``stats`` gets ``generation_s`` (until the last
    batch was sampled) and ``reused_batches`` / ``sampled_batches``.
    """
    cfg, paths, round_index = run.cfg, run.paths, run.round_index
    policy_dir = Path(paths.policy_entering_round(round_index))
    if not policy_dir.exists():
        raise FileNotFoundError(f"stage 03 round {round_index}: the policy {policy_dir} does not exist; run the earlier stages first")
    fp = rollouts_key(run, [p["qid"] for p in problems])
    expected = rows_per_batch(len(problems), cfg.rollout.batch_size, cfg.rollout.samples_per_problem)
    kept = complete_batches(_merge(run, fp, expected), expected)
    stats.update(generation_s=0.0, reused_batches=len(kept), sampled_batches=0, processes=1)
    for b in sorted(kept):
        yield kept[b]
    if len(kept) == len(expected):
        return
    t = time.monotonic()
    tail = ShardTail(lambda: paths.rollout_shard_files(round_index), fp, expected)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage03-sampling") as pool:
        job = pool.submit(run.heavy)
        while True:
            finished = job.done()
            for rows in tail.new_batches():
                stats["sampled_batches"] += 1
                yield rows  # the Teacher scores this batch while the next ones are sampled
            if finished:
                break
            time.sleep(0.05)
        stats["processes"] = job.result()["processes"]  # re-raises what the heavy step raised
    stats["generation_s"] = time.monotonic() - t
    missing = sorted(set(range(len(expected))) - set(kept) - tail.seen)
    if missing:
        raise RuntimeError(f"stage 03 round {round_index}: batches {missing[:5]} were not sampled")
    _merge(run, fp, expected)


def _merge(run: StageRun, fp: str, expected: list[int]) -> list[dict]:
    return merge_rollouts(run.paths.rollouts_file(run.round_index), run.paths.rollout_shard_files(run.round_index),
                          fp, expected)


def heavy_step(run: StageRun) -> dict:
    """This process's share of the batches not kept yet, appended batch by batch to its shard file.

    Every process reads the same ``rollouts.jsonl`` (nothing writes it during a launch) and so
    the same missing batches; process r samples every N-th of them from the r-th. Batch b is
    seeded by (seed, b) alone: the rows are the ones one process would sample.
    """
    cfg, paths, round_index = run.cfg, run.paths, run.round_index
    indices, problems = _round_problems(run)
    policy_dir = Path(paths.policy_entering_round(round_index))
    fp = rollouts_key(run, [p["qid"] for p in problems])
    expected = rows_per_batch(len(problems), cfg.rollout.batch_size, cfg.rollout.samples_per_problem)
    done = set(complete_batches(read_rollouts(paths.rollouts_file(round_index), fp), expected))
    rank, n_proc = process_rank()
    mine = shard([b for b in range(len(expected)) if b not in done], rank, n_proc)
    shard_file = paths.rollout_shard_file(round_index, rank)
    write_jsonl(shard_file, [{"fingerprint": fp}])
    if mine:
        r = cfg.rollout
        progress = Progress(len(mine), f"sampling {r.samples_per_problem} rationales per problem", unit="batches",
                            enabled=rank == 0)
        tokenizer = load_tokenizer(policy_dir)
        features = run.features("train")[indices]
        model = load_rationale_model(policy_dir, feature_shape=features.shape[1:]).to(default_device())
        for b, rows in sample_responses(model, tokenizer, problems, features, num_samples=r.samples_per_problem,
                                        top_k=r.top_k, temperature=r.temperature, max_new_tokens=r.max_new_tokens,
                                        batch_size=r.batch_size, max_source_length=cfg.model.max_source_length,
                                        seed=cfg.run.seed * 1000 + round_index, use_caption=cfg.data.use_caption,
                                        mixed_precision=cfg.run.mixed_precision, batches=mine):
            for row in rows:
                row.update(batch=b, **sentence_layout(tokenizer, row, cfg.teacher.sentence_rules))
            append_jsonl(shard_file, rows)  # one write per batch: a kill loses at most the batch in flight
            progress.update(1)
    return {"processes": n_proc, "batches": len(mine)}


SAMPLE_COLUMNS = ("qid", "sample_index", "rationale", "sentences", "sentence_spans", "scores", "dropped",
                  "drop_reason", "raw_reply", "drop_detail", "cached", "response_ids", "ended", "sample_logprobs",
                  "sentence_end_tokens")


def score_samples(teacher: Any, problems: dict[str, dict], batches: Iterable[list[dict]],
                  max_pending: int, timing: dict | None = None, progress: Progress | None = None) -> pd.DataFrame:
    """Score every sample's sentences as the batches arrive (at most ``max_pending`` requests out);
    one row per sample, in sampling order (the columns of samples.parquet). ``timing`` gets
    ``scoring_s`` (first request to last reply) and ``after_sampling_s`` (last sample to last reply)."""
    views = {qid: ProblemView.from_row(row) for qid, row in problems.items()}
    samples: list[dict] = []
    marks: dict[str, float] = {}

    def items() -> Iterator[ScoreItem]:
        for rows in batches:
            for row in rows:
                samples.append(row)
                marks.setdefault("first", time.monotonic())
                yield ScoreItem(views[row["qid"]], list(row["sentences"]))
        marks["sampled"] = time.monotonic()

    results = []
    for res in teacher.stream(items(), max_pending=max_pending):
        results.append(res)
        if progress is not None:
            progress.update(1)
    end = time.monotonic()
    if timing is not None:
        timing.update(scoring_s=end - marks.get("first", end), after_sampling_s=end - marks.get("sampled", end))
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


def _round_problems(run: StageRun) -> tuple[list[int], list[dict]]:
    """The train problems sampled this round: (row indices, rows)."""
    train = run.problems()["train"]
    indices = select_problems(len(train), run.cfg.rollout.max_problems, run.cfg.run.seed + run.round_index)
    return indices, train.select(indices).to_list()


def run(cfg: Config, paths: RunPaths, round_index: int | None = 1) -> dict:
    """Sample, split, score; write ``samples.parquet`` and ``summary.json``; return the summary."""
    return drive(cfg, paths, STAGE, _sample_and_score, round_index, after=_check, heavy=heavy_step)


def _sample_and_score(run: StageRun) -> dict:
    cfg, paths, round_index = run.cfg, run.paths, run.round_index
    policy_dir = Path(paths.policy_entering_round(round_index))
    if cfg.teacher.sentence_rules == "paper" and policy_dir.exists():  # fail now, not in the sampling processes
        T5Pieces.of(load_tokenizer(policy_dir))
    indices, problems = _round_problems(run)
    by_qid = {p["qid"]: p for p in problems}
    gen: dict = {}
    # The Teacher is opened first, so requests go out as soon as the first batch is sampled: the
    # replies come back while the next batches are generated (a bounded queue of requests).
    with open_teacher(cfg, paths) as teacher:
        batches = sampled_batches(run, problems, gen)
        timing: dict = {}
        total = sum(rows_per_batch(len(problems), cfg.rollout.batch_size, cfg.rollout.samples_per_problem))
        df = score_samples(teacher, by_qid, batches, max(8, 4 * cfg.teacher.concurrency), timing,
                           Progress(total, "Teacher scores", unit="samples"))
        usage = teacher.usage()
    df.to_parquet(paths.samples_file(round_index), index=False)
    return {
        "stage": STAGE, "round": round_index, "problems": len(problems),
        "samples_per_problem": cfg.rollout.samples_per_problem, **score_summary(df), "signal": sample_signal(df),
        "teacher": {"model": cfg.teacher.model, "prompt_version": PROMPT_VERSION, "prompt_style": cfg.teacher.prompt_style,
                    "sentence_rules": cfg.teacher.sentence_rules,
                    "endpoint": endpoint_label(cfg),
                    **{k: v for k, v in usage.items() if k != "model"}},
        "rollouts_reused": gen["sampled_batches"] == 0, "processes": gen["processes"], "rollout_batches": {"reused": gen["reused_batches"],
                                                                           "sampled": gen["sampled_batches"]},
        # sampling and scoring overlap: scoring_s runs from the first request to the last reply, and
        # scoring_after_sampling_s is the part of it spent waiting once the last sample was drawn
        "generation_s": round(gen["generation_s"], 3), "scoring_s": round(timing["scoring_s"], 3),
        "scoring_after_sampling_s": round(timing["after_sampling_s"], 3),
    }


def _check(run: StageRun, summary: dict) -> None:
    """Fails the stage (its summary written) when too many samples were dropped."""
    check_scored_samples(summary, run.cfg.teacher.max_drop_share, run.paths.samples_file(run.round_index))
    say(f"Teacher scores: {summary['sentences']} sentences of {summary['scored']} samples, mean "
        f"{summary['score_mean']:.3f}; {summary['dropped']} samples dropped")


def request_preview(style: str = "aresnb") -> str:
    """The score request the Teacher gets in ``style`` (teacher.prompt_style): system and user
    message, placeholders for the problem."""
    return prompt_preview("score", style)


@dataclass(frozen=True)
class TeacherScoresResult:
    """Stage 03 finished (one round): what notebook 03 shows."""

    summary: dict
    samples: pd.DataFrame  # samples.parquet: one row per sampled rationale, its sentences and scores
    problems: dict[str, dict]  # the round's train problems by qid


def load(cfg: Config, paths: RunPaths, round_index: int | None = 1) -> TeacherScoresResult:
    """The finished round: summary, the samples (DataFrame), the problems by qid."""
    _, problems = _round_problems(stage_run(cfg, paths, STAGE, round_index))
    return TeacherScoresResult(
        summary=read_json(paths.summary_file(STAGE, round_index)),
        samples=pd.read_parquet(paths.samples_file(round_index)),
        problems={p["qid"]: p for p in problems},
    )
