"""Stage 04: PPO on the round's Teacher-scored buffer (the plumbing around :mod:`aresnb.rl.ppo`).

Reads the policy entering the round and ``03_teacher_scores/samples.parquet``: every sample's
token ids exactly as sampled, with the token that ends each sentence. Scores greedy rationales on
held-out (val) problems with the Teacher before and after PPO -- an empty or sentence-less
rationale counts as 0 there, so saying less cannot raise the score -- trains, and saves the policy
(``save_pretrained`` + tokenizer), the critic, metrics and ``summary.json``. A killed run resumes
from the last checkpoint when run again.

The training is the heavy step (:mod:`aresnb.stages.launch`): with ``run.num_processes`` > 1 it
runs under ``accelerate launch``, every process training its share of each optimizer step; the
kernel evaluates before and after, with the policy the main process saved.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from aresnb.config import Config
from aresnb.io import read_json, read_jsonl, write_json
from aresnb.model.checkpoints import fingerprint
from aresnb.model.distributed import default_device, make_accelerator
from aresnb.model.generation import generate_rationales
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.tokenizer import load_tokenizer
from aresnb.paths import PPO, RunPaths
from aresnb.progress import say
from aresnb.rl.ppo import train_ppo
from aresnb.rl.ppo_buffer import buffer_digest
from aresnb.rl.rollouts import build_ppo_samples
from aresnb.rl.value_model import Seq2SeqValueModel
from aresnb.stages.driver import StageRun, drive, stage_run
from aresnb.teacher import ProblemView, ScoreItem, open_teacher
from aresnb.text.rationale_metrics import rationale_quality, sentence_texts

STAGE = PPO
COLLAPSE_WARNING_POINTS = 10.0  # warn when the empty-rationale rate rises by more than this
SENTENCE_MERGE_SHARE = 1 / 3  # warn when sentences per rationale fall by more than this share


# ---- held-out evaluation: greedy rationales scored by the Teacher --------------------------------


def eval_subset(n_val: int, n: int | None, seed: int) -> list[int]:
    """Row indices of the val problems evaluated before/after PPO (seeded, sorted)."""
    if n is None or n >= n_val:
        return list(range(n_val))
    return sorted(random.Random(seed).sample(range(n_val), n))


def score_greedy_rationales(model: Any, tokenizer: Any, problems: list[dict], features: np.ndarray,
                            teacher: Any, cfg: Config) -> dict:
    """The Teacher's score of the model's greedy rationales on ``problems``.

    A problem's score is the mean of its sentence scores; a rationale without a sentence scores
    0 (and is counted in ``empty``); a problem whose reply was unusable is left out and counted.
    Each row keeps the rationale's sentences and their scores (None when unscored): the
    per-sentence reward panel of notebook 04 shows them before and after PPO.
    """
    model.eval()
    rows = generate_rationales(model, tokenizer, problems, features, num_samples=1, do_sample=False,
                               max_new_tokens=cfg.ppo.eval_max_new_tokens, batch_size=cfg.rollout.batch_size,
                               max_source_length=cfg.model.max_source_length, seed=cfg.run.seed,
                               use_caption=cfg.data.use_caption, mixed_precision=cfg.run.mixed_precision)
    by_qid = {p["qid"]: p for p in problems}
    sentences = [sentence_texts(r["rationale"]) for r in rows]
    asked = [i for i, s in enumerate(sentences) if s]
    results = dict(zip(asked, teacher.score_sentences(
        [ScoreItem(ProblemView.from_row(by_qid[rows[i]["qid"]]), sentences[i]) for i in asked])))
    per_problem: list[float | None] = []
    for i in range(len(rows)):
        if i not in results:
            per_problem.append(0.0)  # nothing said: nothing helps solve the problem
        else:
            per_problem.append(None if results[i].dropped else statistics.fmean(results[i].scores))
    kept = [s for s in per_problem if s is not None]
    texts = [r["rationale"] for r in rows]
    return {
        "teacher_score": statistics.fmean(kept) if kept else None,
        "scored": len(kept),
        "dropped": len(rows) - len(kept),
        "empty": len(rows) - len(asked),
        "quality": rationale_quality(texts),
        "rows": [{"qid": r["qid"], "rationale": r["rationale"], "score": s, "sentences": sentences[i],
                  "sentence_scores": None if i not in results or results[i].dropped else list(results[i].scores)}
                 for i, (r, s) in enumerate(zip(rows, per_problem))],
    }


def paired_delta(before: dict, after: dict, n_samples: int, seed: int) -> dict:
    """After minus before on the problems scored both times, with a paired bootstrap 95% interval."""
    a = {r["qid"]: r["score"] for r in before["rows"] if r["score"] is not None}
    b = {r["qid"]: r["score"] for r in after["rows"] if r["score"] is not None}
    both = sorted(set(a) & set(b))
    if not both:
        return {"delta": None, "ci95": [None, None], "n": 0}
    d = np.array([b[q] - a[q] for q in both])
    draws = d[np.random.default_rng(seed).integers(0, len(d), size=(n_samples, len(d)))].mean(axis=1)
    return {"delta": float(d.mean()), "ci95": [float(x) for x in np.quantile(draws, [0.025, 0.975])], "n": len(both)}


# ---- the stage ---------------------------------------------------------------------------------


def _held_out(run: StageRun) -> tuple[list[dict], np.ndarray]:
    problems = run.problems()["val"]
    rows = eval_subset(len(problems), run.cfg.ppo.eval_problems, run.cfg.run.seed)
    return [problems[i] for i in rows], run.features("val")[rows]


def _silent(message: str) -> None:
    """The log of every launched process but the main one."""


def heavy_step(run: StageRun) -> dict:
    """PPO on the round's buffer (every launched process trains its share of each optimizer step);
    the main process saves the policy, its tokenizer and the critic. Returns the run's figures."""
    cfg, paths, round_index = run.cfg, run.paths, run.round_index
    trackers = run.tracking(run.label, {"ppo": vars(cfg.ppo), "round": round_index})
    accelerator = make_accelerator(mixed_precision=cfg.run.mixed_precision, tracking=trackers)
    policy_dir = paths.policy_entering_round(round_index)
    torch.manual_seed(cfg.run.seed)  # the critic's fresh head: the same on every process and on resume
    tokenizer = load_tokenizer(policy_dir)
    policy = load_rationale_model(policy_dir)
    value_model = Seq2SeqValueModel.from_policy(policy, shared=cfg.ppo.value_model == "shared")
    samples, buffer_stats = build_ppo_samples(pd.read_parquet(paths.samples_file(round_index)).to_dict("records"),
                                              run.problems()["train"], tokenizer,
                                              cfg.model.max_source_length, use_caption=cfg.data.use_caption)
    trackers.start(accelerator)
    result = train_ppo(policy, value_model, samples, cfg.ppo, paths.stage_dir(STAGE, round_index),
                       accelerator=accelerator, features=run.features("train"),
                       pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=policy.config.decoder_start_token_id,
                       temperature=cfg.rollout.temperature, seed=cfg.run.seed,
                       fingerprint=fingerprint(cfg.hash(), buffer_digest(samples)),  # every parameter, the exact buffer
                       gradient_checkpointing=cfg.model.gradient_checkpointing,
                       log=say if accelerator.is_main_process else _silent)
    trackers.end(accelerator)
    if accelerator.is_main_process:
        policy.save_pretrained(paths.ppo_policy_dir(round_index))
        tokenizer.save_pretrained(paths.ppo_policy_dir(round_index))
        value_model.save_pretrained(paths.ppo_value_dir(round_index))
    accelerator.wait_for_everyone()
    figures = {k: v for k, v in dataclasses.asdict(result).items() if k != "metrics"}
    return {**figures, "buffer": buffer_stats, "processes": accelerator.num_processes}


def run(cfg: Config, paths: RunPaths, round_index: int | None = 1, *, log: Callable[[str], None] = say) -> dict:
    """Evaluate the entering policy, PPO on the buffer (the heavy step), evaluate again; returns the summary."""
    return drive(cfg, paths, STAGE, lambda run: _train_and_evaluate(run, log), round_index, heavy=heavy_step)


def _train_and_evaluate(run: StageRun, log: Callable[[str], None]) -> dict:
    cfg, paths, round_index = run.cfg, run.paths, run.round_index
    policy_dir = paths.policy_entering_round(round_index)
    samples_file = paths.samples_file(round_index)
    for need, what in ((policy_dir, "the policy entering the round"), (samples_file, "the Teacher-scored buffer (stage 03)")):
        if not Path(need).exists():
            raise FileNotFoundError(f"stage 04 needs {what}: {need} does not exist; run the earlier stages first")
    eval_problems, eval_features = _held_out(run)
    with open_teacher(cfg, paths) as teacher:
        before = _score_before(run, eval_problems, eval_features, teacher)
        log(f"before PPO: Teacher score {_fmt(before['teacher_score'])} on {len(eval_problems)} val problems "
            f"({before['empty']} empty, {before['dropped']} unscored)")
        result = run.heavy(log=log)
        tokenizer = load_tokenizer(paths.ppo_policy_dir(round_index))
        policy = load_rationale_model(paths.ppo_policy_dir(round_index)).to(default_device())
        t = time.time()
        after = score_greedy_rationales(policy, tokenizer, eval_problems, eval_features, teacher, cfg)
        after["wall_time_s"] = time.time() - t
        write_json(paths.ppo_eval_file(round_index, "after"), after)
        log(f"after PPO:  Teacher score {_fmt(after['teacher_score'])} (before {_fmt(before['teacher_score'])})")
        usage = teacher.usage()
    return stage_summary(cfg, paths, round_index, before, after, result, usage, log)


def _score_before(run: StageRun, problems: list[dict], features: np.ndarray, teacher: Any) -> dict:
    """The entering policy's held-out score; kept on disk while the step's inputs hold, so a
    resumed stage does not redo it."""
    before_file = run.paths.ppo_eval_file(run.round_index, "before")
    before = read_json(before_file) if before_file.exists() else {}
    key = run.inputs_key()
    if before.get("fingerprint") != key:
        t = time.time()
        policy_dir = run.paths.policy_entering_round(run.round_index)
        policy = load_rationale_model(policy_dir).to(default_device())
        before = score_greedy_rationales(policy, load_tokenizer(policy_dir), problems, features, teacher, run.cfg)
        before.update(wall_time_s=time.time() - t, fingerprint=key)
        write_json(before_file, before)
    return before


def stage_summary(cfg: Config, paths: RunPaths, round_index: int, before: dict, after: dict, result: dict,
                  usage: dict, log: Callable[[str], None] = print) -> dict:
    """summary.json of stage 04 (``result``: what the heavy step returned), and the loud warning
    when the policy collapsed."""
    metrics = read_jsonl(paths.metrics_file(STAGE, round_index))
    buffer_stats = result["buffer"]
    quality = {"before_rl": before["quality"], "after_rl": after["quality"]}
    empty_rise = 100.0 * (after["quality"]["empty_rate"] - before["quality"]["empty_rate"])
    collapsed = empty_rise > COLLAPSE_WARNING_POINTS
    if collapsed:
        log(f"WARNING: the policy collapsed towards empty rationales: {100 * after['quality']['empty_rate']:.0f}% of "
            f"greedy val rationales are empty after PPO ({100 * before['quality']['empty_rate']:.0f}% before). "
            "Lower ppo.lr or ppo.ppo_epochs, or raise ppo.kl_loss_coef.")
    sentences = {k: q["mean_sentences"] for k, q in quality.items()}
    words_per_sentence = {k: q["words_per_sentence"] for k, q in quality.items()}
    # When most sentences score below 0.5 every sentence end costs reward: the policy learns to run
    # sentences together, a failure the mean score does not show.
    merged = sentences["before_rl"] > 0 and sentences["after_rl"] < (1 - SENTENCE_MERGE_SHARE) * sentences["before_rl"]
    if merged:
        log(f"WARNING: the policy runs sentences together: {sentences['before_rl']:.2f} -> {sentences['after_rl']:.2f} "
            f"sentences per greedy val rationale, {words_per_sentence['before_rl']:.1f} -> "
            f"{words_per_sentence['after_rl']:.1f} words per sentence. Each sentence end carries score - 0.5: with "
            "mostly low scores, fewer ends pay. Lower ppo.lr or ppo.ppo_epochs, or raise ppo.kl_loss_coef.")
    expected_steps = math.ceil((buffer_stats["samples_total"] - buffer_stats["samples_dropped"]) / cfg.ppo.batch_size)
    delta = paired_delta(before, after, cfg.evaluation.bootstrap_samples, cfg.run.seed)
    return {
        "stage": STAGE,
        "round": round_index,
        "teacher_score_before": before["teacher_score"],
        "teacher_score_after": after["teacher_score"],
        "teacher_score_delta": delta["delta"],
        "teacher_score_delta_ci95": delta["ci95"],
        "eval_problems": len(before["rows"]),
        "eval_empty_before": before["empty"],
        "eval_empty_after": after["empty"],
        "eval_unscored_before": before["dropped"],
        "eval_unscored_after": after["dropped"],
        "eval_quality": quality,  # repeated / unfinished / empty rates and mean length, greedy val
        "collapse_warning": collapsed,
        "sentences_per_rationale": sentences,  # greedy val, before and after RL
        "words_per_sentence": words_per_sentence,
        "sentence_merge_warning": merged,
        **buffer_stats,
        "sequences_trained": result["sequences"],
        "passes": result["passes"],
        "optimizer_steps": result["optimizer_steps"],
        "expected_optimizer_steps": expected_steps * cfg.ppo.ppo_epochs if cfg.ppo.max_steps is None else None,
        "kl_by_pass": result["kl_by_pass"],
        "sampling_logprob_gap": result["sampling_logprob_gap"],
        "resumed_from_step": result["resumed_from_step"],
        "processes": result["processes"],
        "value_model": cfg.ppo.value_model,
        "guards": {"kl_loss_coef": cfg.ppo.kl_loss_coef, "value_warmup_passes": cfg.ppo.value_warmup_passes,
                   "value_warmup_loss": result["value_warmup_loss"]},
        "throughput": {k: statistics.fmean(m[f"throughput/{k}"] for m in metrics) if metrics else None
                       for k in ("sequences_per_s", "tokens_per_s", "padding_share")},
        "final_metrics": metrics[-1] if metrics else {},
        "policy_dir": str(paths.ppo_policy_dir(round_index)),
        "teacher_usage": usage,
    }


@dataclass(frozen=True)
class PPOResult:
    """Stage 04 finished (one round): what notebook 04 shows."""

    summary: dict
    metrics: list[dict]  # one row per optimizer step (the fixed metric names)
    examples: pd.DataFrame  # greedy val rationales and scores before and after PPO, one row per problem
    eval: dict[str, list[dict]]  # "before" / "after": the rows as written, with per-sentence scores
    problems: dict[str, dict]  # the val problems by qid


def load(cfg: Config, paths: RunPaths, round_index: int | None = 1) -> PPOResult:
    """The finished round: summary, per-step metrics, greedy val rationales before and after PPO
    (``examples``: one row per problem; ``eval``: the rows as written, with per-sentence scores),
    and the val problems by qid."""
    evals = {when: read_json(paths.ppo_eval_file(round_index, when))["rows"] for when in ("before", "after")}
    rows = {when: pd.DataFrame(r)[["qid", "rationale", "score"]].set_index("qid") for when, r in evals.items()}
    return PPOResult(
        summary=read_json(paths.summary_file(STAGE, round_index)),
        metrics=read_jsonl(paths.metrics_file(STAGE, round_index)),
        examples=rows["before"].merge(rows["after"], left_index=True, right_index=True, suffixes=("_before", "_after")),
        eval=evals,
        problems={str(p["qid"]): dict(p) for p in stage_run(cfg, paths, STAGE, round_index).problems()["val"]},
    )


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
