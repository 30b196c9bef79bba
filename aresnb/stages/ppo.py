"""Stage 04: PPO on the round's Teacher-scored buffer (the plumbing around ``aresnb.ppo``).

Reads the policy entering the round and ``03_teacher_scores/samples.parquet``; tokenizes each
buffered rationale as the SFT target ("Solution: <rationale>") with the token that ends each
sentence; scores greedy rationales on held-out (val) problems with the Teacher before and after
PPO; trains; saves the policy (``save_pretrained`` + tokenizer), the critic, metrics and
``summary.json``. A killed run resumes from the last checkpoint when run again.

Multi-process: ``accelerate launch -m aresnb.stages.ppo --params P --round 1``; the main process
evaluates and writes, every process trains its share of each batch.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from aresnb.checkpoints import fingerprint
from aresnb.config import load_config
from aresnb.data.prompts import build_source, build_target
from aresnb.generation import generate_rationales
from aresnb.io import read_json, read_jsonl, write_json
from aresnb.models import load_rationale_model
from aresnb.paths import PPO, RunPaths
from aresnb.ppo import PPOSample, make_accelerator, train_ppo
from aresnb.rationale_metrics import repeated_sentence_rate
from aresnb.sentences import sentence_last_token_indices, sentence_texts, split_sentences
from aresnb.stages.data import load_features, load_problems
from aresnb.teacher import ProblemView, ScoreItem, open_teacher
from aresnb.tokenizer import load_tokenizer
from aresnb.value_model import Seq2SeqValueModel

STAGE = PPO
SOURCE_FORMAT = "QCM-E"


# ---- buffer -> PPO samples ---------------------------------------------------------------------


def rationale_offset(target: str, rationale: str) -> int | None:
    """Where ``rationale`` starts inside the target text; None when the target rewrote it."""
    if target.endswith(rationale):
        return len(target) - len(rationale)
    at = target.find(rationale)
    return None if at < 0 else at


def build_ppo_samples(rows: Sequence[dict], problems: Any, tokenizer: Any, max_source_length: int,
                      max_target_length: int, use_caption: bool = True) -> tuple[list, dict]:
    """PPOSample per buffered row (dropped replies kept, flagged) and counts of what was seen.

    Sentence spans are relative to the stored rationale. When the target text rewrote it
    (``build_target`` collapses whitespace) the target's rationale is split again; if that gives
    another number of sentences than there are scores, the sample is dropped ("span_mismatch").
    """
    row_of_qid = {q: i for i, q in enumerate(problems["qid"])}
    out, truncated_sentences, reasons = [], 0, {}
    for r in rows:
        qid = str(r["qid"])
        if qid not in row_of_qid:
            raise KeyError(f"samples.parquet: qid {qid} is not in the train split of the dataset")
        problem = problems[row_of_qid[qid]]
        rationale = str(r["rationale"] or "")
        dropped = bool(r["dropped"]) or r["scores"] is None
        if dropped:
            reasons[str(r.get("drop_reason"))] = reasons.get(str(r.get("drop_reason")), 0) + 1
        target = build_target(problem, SOURCE_FORMAT, rationale=rationale)
        offset = rationale_offset(target, rationale)
        spans = [tuple(int(x) for x in s) for s in (r["sentence_spans"] if r["sentence_spans"] is not None else [])]
        if offset is None:
            offset = len(target) - len(target.split(": ", 1)[-1])
            spans = [(x.start, x.end) for x in split_sentences(target[offset:])]
            if not dropped and len(spans) != len(r["scores"]):
                dropped, reasons["span_mismatch"] = True, reasons.get("span_mismatch", 0) + 1
        enc = tokenizer(target, truncation=True, max_length=max_target_length, return_offsets_mapping=True)
        ends = sentence_last_token_indices(target, tokenizer, spans=spans, char_offset=offset, offsets=enc["offset_mapping"])
        covered = max((b for a, b in enc["offset_mapping"] if b > a), default=0)
        truncated_sentences += sum(1 for s in spans if s[1] + offset > covered)
        source_ids = tokenizer(build_source(problem, SOURCE_FORMAT, use_caption=use_caption), truncation=True, max_length=max_source_length)["input_ids"]
        scores = None if r["scores"] is None else [float(x) for x in r["scores"]]
        out.append(PPOSample(qid=qid, sample_index=int(r["sample_index"]), source_ids=list(source_ids),
                             response_ids=list(enc["input_ids"]), sentence_end_indices=ends, scores=scores,
                             dropped=dropped, feature_row=row_of_qid[qid], text=rationale))
    return out, {"samples_total": len(rows), "samples_dropped": sum(reasons.values()), "drop_reasons": reasons,
                 "sentences_truncated": truncated_sentences}


# ---- held-out evaluation: greedy rationales scored by the Teacher --------------------------------


def eval_subset(n_val: int, n: int | None, seed: int) -> list[int]:
    """Row indices of the val problems evaluated before/after PPO (seeded, sorted)."""
    if n is None or n >= n_val:
        return list(range(n_val))
    return sorted(random.Random(seed).sample(range(n_val), n))


def score_greedy_rationales(model: Any, tokenizer: Any, problems: list[dict], features: np.ndarray,
                            teacher: Any, cfg: Any) -> dict:
    """Mean Teacher score of the model's greedy rationales on ``problems`` (dropped replies counted)."""
    model.eval()
    rows = generate_rationales(model, tokenizer, problems, features, num_samples=1, do_sample=False,
                               max_new_tokens=cfg.ppo.eval_max_new_tokens, batch_size=cfg.rollout.batch_size,
                               max_source_length=cfg.model.max_source_length, seed=cfg.run.seed,
                               use_caption=cfg.data.use_caption)
    by_qid = {p["qid"]: p for p in problems}
    items = [ScoreItem(problem=ProblemView.from_row(by_qid[r["qid"]]), sentences=sentence_texts(r["rationale"]))
             for r in rows]
    results = teacher.score_sentences(items)
    per_problem = [statistics.fmean(res.scores) if res.scores else None for res in results]
    kept = [s for s, res in zip(per_problem, results) if s is not None and not res.dropped]
    texts = [r["rationale"] for r in rows]
    return {
        "teacher_score": statistics.fmean(kept) if kept else None,
        "dropped": len(rows) - len(kept),
        "mean_sentences": statistics.fmean(len(i.sentences) for i in items) if items else 0.0,
        "mean_words": statistics.fmean(len(t.split()) for t in texts) if texts else 0.0,
        "repetition_rate": repeated_sentence_rate(texts),
        "rows": [{"qid": r["qid"], "rationale": r["rationale"], "score": s} for r, s in zip(rows, per_problem)],
    }


# ---- the stage ---------------------------------------------------------------------------------


def run(cfg: Any, paths: RunPaths, round_index: int | None = 1, *, accelerator: Any = None,
        log: Callable[[str], None] = print) -> dict:
    """Evaluate the entering policy, PPO on the buffer, evaluate again; returns the summary."""
    started = time.time()
    accelerator = accelerator or make_accelerator()
    main = accelerator.is_main_process
    stage_dir = paths.stage_dir(STAGE, round_index)
    policy_dir = paths.policy_entering_round(round_index)
    samples_file = paths.samples_file(round_index)
    for need, what in ((policy_dir, "the policy entering the round"), (samples_file, "the Teacher-scored buffer (stage 03)")):
        if not Path(need).exists():
            raise FileNotFoundError(f"stage 04 needs {what}: {need} does not exist; run the earlier stages first")

    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(policy_dir)
    policy = load_rationale_model(policy_dir)
    ref_policy = load_rationale_model(policy_dir)
    value_model = Seq2SeqValueModel.from_policy(policy, shared=cfg.ppo.value_model == "shared")
    problems = load_problems(paths)
    train_features = load_features(paths, "train")
    val_features = load_features(paths, "val")
    val_rows = eval_subset(len(problems["val"]), cfg.ppo.eval_problems, cfg.run.seed)
    eval_problems = [problems["val"][i] for i in val_rows]
    eval_features = val_features[val_rows]

    buffer_rows = pd.read_parquet(samples_file).to_dict("records")
    samples, buffer_stats = build_ppo_samples(buffer_rows, problems["train"], tokenizer,
                                              cfg.model.max_source_length, cfg.model.max_target_length,
                                              use_caption=cfg.data.use_caption)

    # what identifies this run's checkpoints: every parameter and the exact buffer
    run_id = fingerprint(cfg.hash(), [(s.qid, s.sample_index, s.response_ids, s.scores) for s in samples])
    teacher = None
    before_file = paths.ppo_eval_file(round_index, "before")
    if main:
        teacher = open_teacher(cfg, paths)
    try:
        if main:
            before = read_json(before_file) if before_file.exists() else {}
            if before.get("fingerprint") != run_id:  # else: resumed, the entering policy was scored
                t = time.time()
                before = score_greedy_rationales(ref_policy, tokenizer, eval_problems, eval_features, teacher, cfg)
                before.update(wall_time_s=time.time() - t, fingerprint=run_id)
                write_json(before_file, before)
            log(f"before PPO: Teacher score {_fmt(before['teacher_score'])} on {len(eval_problems)} val problems "
                f"({before['dropped']} dropped)")
        accelerator.wait_for_everyone()

        result = train_ppo(policy, ref_policy, value_model, samples, cfg.ppo, stage_dir, accelerator=accelerator,
                           features=train_features, pad_token_id=tokenizer.pad_token_id,
                           decoder_start_token_id=policy.config.decoder_start_token_id,
                           temperature=cfg.rollout.temperature, seed=cfg.run.seed, fingerprint=run_id, log=log)

        summary: dict = {}
        if main:
            policy_out = paths.ppo_policy_dir(round_index)
            policy.save_pretrained(policy_out)
            tokenizer.save_pretrained(policy_out)
            value_model.save_pretrained(paths.ppo_value_dir(round_index))
            t = time.time()
            after = score_greedy_rationales(policy, tokenizer, eval_problems, eval_features, teacher, cfg)
            after["wall_time_s"] = time.time() - t
            write_json(paths.ppo_eval_file(round_index, "after"), after)
            log(f"after PPO:  Teacher score {_fmt(after['teacher_score'])} (before {_fmt(before['teacher_score'])})")
            metrics = read_jsonl(paths.metrics_file(STAGE, round_index))
            summary = {
                "stage": STAGE,
                "round": round_index,
                "teacher_score_before": before["teacher_score"],
                "teacher_score_after": after["teacher_score"],
                "teacher_score_delta": (after["teacher_score"] - before["teacher_score"])
                if before["teacher_score"] is not None and after["teacher_score"] is not None else None,
                "eval_problems": len(eval_problems),
                "eval_dropped_before": before["dropped"],
                "eval_dropped_after": after["dropped"],
                "eval_repetition_rate_before": before["repetition_rate"],
                "eval_repetition_rate_after": after["repetition_rate"],
                "eval_mean_words_before": before["mean_words"],
                "eval_mean_words_after": after["mean_words"],
                **buffer_stats,
                "sequences_trained": result.sequences_trained,
                "sequences_unused": result.unused,
                "updates": result.updates,
                "resumed_from_update": result.resumed_from,
                "processes": accelerator.num_processes,
                "value_model": cfg.ppo.value_model,
                "mean_sps": statistics.fmean(m["charts/sps"] for m in metrics) if metrics else None,
                "final_metrics": metrics[-1] if metrics else {},
                "policy_dir": str(policy_out),
                "teacher_usage": teacher.usage(),
                "wall_time_s": time.time() - started,
            }
            write_json(paths.summary_file(STAGE, round_index), summary)
        accelerator.wait_for_everyone()
    finally:
        if teacher is not None:
            teacher.close()
    return summary


def load(cfg: Any, paths: RunPaths, round_index: int | None = 1) -> dict:
    """The finished round: summary, per-update metrics, greedy val rationales before and after PPO."""
    rows = {when: pd.DataFrame(read_json(paths.ppo_eval_file(round_index, when))["rows"]).set_index("qid")
            for when in ("before", "after")}
    return {
        "summary": read_json(paths.summary_file(STAGE, round_index)),
        "metrics": read_jsonl(paths.metrics_file(STAGE, round_index)),
        "examples": rows["before"].merge(rows["after"], left_index=True, right_index=True, suffixes=("_before", "_after")),
    }


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    """``[accelerate launch ...] python -m aresnb.stages.ppo --params P --round 1 [--set k=v ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=None, help="parameter YAML (default: params/smoke.yaml)")
    ap.add_argument("--round", type=int, default=1, dest="round_index")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    args = ap.parse_args(argv)
    cfg = load_config(args.params, args.set)
    run(cfg, RunPaths(cfg), args.round_index)


if __name__ == "__main__":
    main()
