"""Stage 05: the Teacher corrects the RL model's rationales, then SFT on them from the RL checkpoint.

ARES's second kind of feedback (design notes, section 4). RL on sentence scores alone drifts into
repeated words, repeated sentences and sentences cut off at the token limit; here

1. the round's PPO policy writes one greedy rationale per train problem,
2. sentences that repeat an earlier one are removed,
3. the Teacher corrects each rationale (keep correct sentences and starting thoughts, fix grammar
   and incomplete sentences, correct wrong sentences from the given information only); an empty
   or unparsable reply keeps the de-duplicated RL rationale and is counted as a fallback,
4. the corrected rationales replace the train solutions and the one trainer (``aresnb.sft``)
   fine-tunes on QCM-E starting FROM the PPO policy; the result enters the next round.

Resumable: each generation is written once and reused, the Teacher's reply cache makes repeated
requests free, and the trainer resumes from its last checkpoint. Every cached artefact is tied to
a fingerprint of its inputs (parameters + the PPO policy's weights) and discarded when it changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from aresnb.checks import check_corrections
from aresnb.paths import RunPaths, read_json, read_jsonl, write_json, write_jsonl, write_summary
from aresnb.rationale_metrics import dedupe_sentences, rationale_quality, word_edit_distance

STATUSES = ("corrected", "unchanged", "fallback")
EDIT_DISTANCE_UNIT = "words: Levenshtein distance over whitespace tokens, de-duplicated RL rationale -> SFT target"
STAGE = "05_correction_sft"


# ---- pure pieces -------------------------------------------------------------------------------


def select_problems(n_total: int, max_problems: Optional[int], seed: int, round_index: int) -> list[int]:
    """Sorted row indices of the train problems corrected this round (all, or a seeded subset).

    The subset changes with the round, so that successive rounds see different problems.
    """
    if max_problems is None or max_problems >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng([seed, round_index, 5])
    return sorted(int(i) for i in rng.choice(n_total, size=max_problems, replace=False))


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def correction_row(qid: str, rl_rationale: str, result: Any) -> dict:
    """One row of corrections.parquet from the RL rationale and the Teacher's CorrectionResult.

    ``target`` is what SFT learns: the correction, or the de-duplicated RL rationale when the
    Teacher's reply was empty or unparsable (``fallback``).
    """
    deduped, removed = dedupe_sentences(rl_rationale)
    text = None if result is None or result.fallback else result.text
    if text is None or not text.strip():
        status, target = "fallback", deduped
    elif _same_text(text, deduped):
        status, target = "unchanged", deduped
    else:
        status, target = "corrected", text.strip()
    return {
        "qid": str(qid),
        "rl_rationale": rl_rationale,
        "deduped": deduped,
        "duplicates_removed": removed,
        "corrected": None if status == "fallback" else text.strip(),
        "target": target,
        "status": status,
        "edit_distance": word_edit_distance(deduped, target),
        "raw_reply": None if result is None else result.raw_reply,
        "detail": None if result is None else getattr(result, "detail", None),
        "cached": bool(getattr(result, "cached", False)),
    }


def summarize_corrections(rows: Sequence[dict]) -> dict:
    """Counts by status, duplicates removed and the mean word-level edit distance."""
    n = len(rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    corrected = [r["edit_distance"] for r in rows if r["status"] == "corrected"]
    return {
        "n_problems": n,
        **counts,
        "fallback_rate": counts["fallback"] / n if n else 0.0,
        "duplicate_sentences_removed": int(sum(r["duplicates_removed"] for r in rows)),
        "rationales_with_duplicates": int(sum(r["duplicates_removed"] > 0 for r in rows)),
        "mean_edit_distance": float(np.mean([r["edit_distance"] for r in rows])) if n else 0.0,
        "mean_edit_distance_corrected": float(np.mean(corrected)) if corrected else 0.0,
        "edit_distance_unit": EDIT_DISTANCE_UNIT,
    }


# ---- resumable artefacts -----------------------------------------------------------------------


def inputs_fingerprint(cfg: Any, round_index: int, policy_dir: Path) -> str:
    """What the stage's cached artefacts depend on: parameters and the PPO policy's weights."""
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(policy_dir).glob("*") if f.is_file())
    values = cfg.to_dict()
    blob = json.dumps({"round": round_index, "seed": cfg.run.seed, "model": values["model"],
                       "correction": values["correction"], "teacher_model": cfg.teacher.model,
                       "policy": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reset_if_inputs_changed(stage_dir: Path, fingerprint: str) -> bool:
    """Discard artefacts made from other inputs (True when something was discarded)."""
    state = stage_dir / "inputs.json"
    if state.exists() and read_json(state).get("fingerprint") == fingerprint:
        return False
    stale = state.exists()
    for name in ("checkpoints", "model"):
        if (stage_dir / name).exists():
            shutil.rmtree(stage_dir / name)
            stale = True
    for f in [*stage_dir.glob("rl_rationales_*.jsonl"), *stage_dir.glob("before_rl_rationales_*.jsonl"),
              stage_dir / "corrections.parquet", stage_dir / "metrics.jsonl", stage_dir / "sft_data.json"]:
        if f.exists():
            f.unlink()
            stale = True
    write_json(state, {"fingerprint": fingerprint})
    return stale


def drop_checkpoints_of_other_data(stage_dir: Path, examples: Sequence[dict]) -> bool:
    """Checkpoints resume only on the same SFT examples (the trainer's own key does not see the
    texts, and new Teacher replies change the targets); True when stale ones were removed."""
    digest = hashlib.sha256(json.dumps([(e["source"], e["target"]) for e in examples]).encode()).hexdigest()[:16]
    state = stage_dir / "sft_data.json"
    stale = state.exists() and read_json(state).get("examples_sha256") != digest
    if stale or not state.exists():
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
    write_json(state, {"examples_sha256": digest, "n_examples": len(examples)})
    return stale


def cached_rationales(path: Path, qids: Sequence[str], make) -> dict[str, str]:
    """``{qid: rationale}`` from ``path`` if it covers exactly ``qids``, else ``make()`` and save."""
    rows = read_jsonl(path)
    if rows and [r["qid"] for r in rows] == list(qids):
        return {r["qid"]: r["rationale"] for r in rows}
    out = make()
    write_jsonl(path, [{"qid": q, "rationale": out[q]} for q in qids])
    return out


# ---- the stage ---------------------------------------------------------------------------------


def _greedy(model, tokenizer, problems: list[dict], features: np.ndarray, cfg: Any) -> dict[str, str]:
    from aresnb.generation import generate_rationales

    rows = generate_rationales(
        model, tokenizer, problems, features, num_samples=1, do_sample=False,
        max_new_tokens=cfg.correction.max_new_tokens, batch_size=cfg.correction.sft.gen_batch_size,
        max_source_length=cfg.model.max_source_length, seed=cfg.run.seed, use_caption=cfg.data.use_caption,
    )
    return {str(r["qid"]): r["rationale"] for r in rows}


def _load_model(path: Path):
    from aresnb.models import load_rationale_model
    from aresnb.tokenizer import load_tokenizer

    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"stage 05 needs a saved model at {path}: run the earlier stages of this round first")
    model = load_rationale_model(path)
    model.eval()
    return model, load_tokenizer(path)


def run_correction_stage(cfg: Any, paths: RunPaths, round_index: int) -> dict:
    """Correct the RL policy's train rationales with the Teacher, SFT on them, measure the effect."""
    import pandas as pd

    from aresnb.data import load_features, load_problems
    from aresnb.sft import make_examples, train_seq2seq
    from aresnb.teacher import CorrectionItem, ProblemView, open_teacher

    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - start - sum(timings.values()), 2)

    stage_dir = paths.stage_dir(STAGE, round_index)
    policy_dir = paths.ppo_policy_dir(round_index)
    restarted = reset_if_inputs_changed(stage_dir, inputs_fingerprint(cfg, round_index, policy_dir))

    data = load_problems(paths)
    train_all = [dict(r) for r in data["train"]]
    rows_idx = select_problems(len(train_all), cfg.correction.max_problems, cfg.run.seed, round_index)
    train = [train_all[i] for i in rows_idx]
    train_features = load_features(paths, "train")[rows_idx]
    split_data = {s: ([dict(r) for r in data[s]], load_features(paths, s)) for s in ("val", "test")}
    qids = {s: [str(p["qid"]) for p in probs] for s, (probs, _) in split_data.items()}
    train_qids = [str(p["qid"]) for p in train]

    lap("load_data")
    # 1. the RL policy's greedy rationales: train (to correct), val (the after-RL rates), test (panel)
    model, tokenizer = _load_model(policy_dir)
    rl_train = cached_rationales(stage_dir / "rl_rationales_train.jsonl", train_qids,
                                 lambda: _greedy(model, tokenizer, train, train_features, cfg))
    rl_eval = {s: cached_rationales(stage_dir / f"rl_rationales_{s}.jsonl", qids[s],
                                    lambda s=s: _greedy(model, tokenizer, *split_data[s], cfg))
               for s in ("val", "test")}

    lap("generate_rl")
    # 2-3. de-duplicate, then the Teacher corrects (its cache makes a restarted stage free)
    items = [CorrectionItem(ProblemView.from_row(p), dedupe_sentences(rl_train[q])[0]) for p, q in zip(train, train_qids)]
    teacher = open_teacher(cfg, paths)
    try:
        results = teacher.correct(items)
        usage = teacher.usage()
    finally:
        teacher.close()
    rows = [correction_row(q, rl_train[q], r) for q, r in zip(train_qids, results)]
    pd.DataFrame(rows).to_parquet(stage_dir / "corrections.parquet", index=False)
    check_corrections(rows, stage_dir / "corrections.parquet")

    lap("teacher")
    # 4. SFT on the corrections, from the RL checkpoint (the trainer resumes from its checkpoints)
    examples = make_examples(train, "QCM-E", rationales={r["qid"]: r["target"] for r in rows},
                             use_caption=cfg.data.use_caption)
    model_dir = paths.sft_model_dir(round_index)
    drop_checkpoints_of_other_data(stage_dir, examples)
    trained = train_seq2seq(model, tokenizer, examples, train_features, cfg.correction.sft, stage_dir,
                            model_dir=model_dir, max_source_length=cfg.model.max_source_length,
                            max_target_length=cfg.model.max_target_length, seed=cfg.run.seed + round_index,
                            mixed_precision=cfg.run.mixed_precision, desc=f"sft on corrections, round {round_index}")
    model = trained.model
    model.eval()

    lap("sft")
    after_sft = {}
    for s in ("val", "test"):
        out = _greedy(model, tokenizer, *split_data[s], cfg)
        write_jsonl(paths.rationales_file(f"round_{round_index}", s), [{"qid": q, "rationale": out[q]} for q in qids[s]])
        after_sft[s] = out

    lap("generate_sft")
    # 5. the paper's motivation, measured on val: before RL, after RL, after SFT
    before, before_source = before_rl_val_rationales(cfg, paths, round_index, split_data["val"], qids["val"], stage_dir)
    rates = {
        "before_rl": rationale_quality([before[q] for q in qids["val"]]),
        "after_rl": rationale_quality([rl_eval["val"][q] for q in qids["val"]]),
        "after_sft": rationale_quality([after_sft["val"][q] for q in qids["val"]]),
    }
    train_rates = {
        "rl": rationale_quality([r["rl_rationale"] for r in rows]),
        "deduped": rationale_quality([r["deduped"] for r in rows]),
        "sft_target": rationale_quality([r["target"] for r in rows]),
    }
    lap("rates")
    summary = {
        "stage": STAGE,
        "round": round_index,
        **summarize_corrections(rows),
        "val_rates": rates,
        "train_rates": train_rates,
        "rates_definition": {
            "repeated_sentence_rate": "sentences repeating an earlier sentence of the same rationale / all sentences",
            "unfinished_sentence_rate": "rationales whose last sentence lacks . ! or ? / non-empty rationales",
            "repeated_word_rate": "words equal to the previous word / all words",
        },
        "before_rl_model": str(paths.policy_entering_round(round_index)),
        "before_rl_rationales": before_source,
        "max_new_tokens": cfg.correction.max_new_tokens,
        "teacher": usage,
        "sft": trained.summary(),
        "restarted_with_new_inputs": restarted,
        "model_dir": str(model_dir),
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    write_summary(stage_dir, summary)
    return {"summary": summary, "corrections": pd.DataFrame(rows), "stage_dir": stage_dir}


def before_rl_val_rationales(cfg: Any, paths: RunPaths, round_index: int, val: tuple, qids: list[str],
                             stage_dir: Path) -> tuple[dict[str, str], str]:
    """Val rationales of the model entering the round and where they came from: the file its
    stage wrote (baseline or the previous round), else generated here with this stage's settings."""
    name = "baseline" if round_index == 1 else f"round_{round_index - 1}"
    path = paths.rationales_file(name, "val")
    rows = read_jsonl(path)
    if rows and {str(r["qid"]) for r in rows} >= set(qids):
        by = {str(r["qid"]): r["rationale"] for r in rows}
        return {q: by[q] for q in qids}, str(path)
    model, tokenizer = _load_model(paths.policy_entering_round(round_index))
    own = stage_dir / "before_rl_rationales_val.jsonl"
    return cached_rationales(own, qids, lambda: _greedy(model, tokenizer, *val, cfg)), str(own)
