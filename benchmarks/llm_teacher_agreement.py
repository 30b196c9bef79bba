"""How a real-model run went: its wall time, invalid replies, and its Teacher's agreement with the
reference Teacher on the same samples.

Reads a finished run (default ``outputs/smoke_llm_teacher``, from ``aresnb run
params/smoke_llm_teacher.yaml``): the manifest's stage wall times; every stage summary's Teacher
usage (requests, invalid replies, repairs, response format and fallbacks, drops); and stage 03's
``samples.parquet``, whose sentences the run's Teacher scored. The reference Teacher (the
rule-based one, in-process, on the run's own dataset) scores the same sentences; the two are
compared sentence by sentence: Pearson and Spearman correlation (None when either side has zero
variance: a constant scorer agrees with nothing), mean absolute difference, and the share of
sentences whose reward sign (score - 0.5: above, at or below) both agree on.
Writes ``benchmarks/results/llm_teacher_agreement.json``.

    .venv/bin/python benchmarks/llm_teacher_agreement.py [--run outputs/smoke_llm_teacher]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aresnb.data.schema import SPLITS  # noqa: E402
from aresnb.io import write_json  # noqa: E402
from aresnb.stages.results import RunResults, read_problem_outcomes_dir, read_run_dir  # noqa: E402
from aresnb.teacher import ProblemView  # noqa: E402
from aresnb.teacher.reference import ReferenceTeacher  # noqa: E402

USAGE_KEYS = {"03_teacher_scores": "teacher", "04_ppo": "teacher_usage", "05_correction_sft": "teacher",
              "07_evaluation": "teacher_usage"}


def _corr(a: np.ndarray, b: np.ndarray, method: str) -> float | None:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return None
    value = pd.Series(a).corr(pd.Series(b), method=method)
    return None if math.isnan(value) else round(float(value), 4)


def agreement(run: Path) -> dict:
    outcomes = read_problem_outcomes_dir(run, splits=SPLITS)
    if 1 not in outcomes.samples:
        raise FileNotFoundError(f"{run}: round 1 has no stage 03 samples (samples.parquet): has stage 03 run?")
    samples = outcomes.samples[1]
    reference = ReferenceTeacher([ProblemView.from_row(row) for split in SPLITS for row in outcomes.problems[split]])
    problems = {p.qid: p for ps in reference.index.values() for p in ps}
    ours, ref = [], []
    for row in samples[~samples["dropped"]].itertuples():
        sentences = list(row.sentences)
        ours += [float(x) for x in row.scores]
        ref += reference.sentence_scores(problems.get(row.qid), sentences)
    a, b = np.array(ours), np.array(ref)
    sign = lambda x: np.sign(np.round(x - 0.5, 6))
    return {
        "samples": int(len(samples)), "samples_scored": int((~samples["dropped"]).sum()), "sentences": int(len(a)),
        "pearson": _corr(a, b, "pearson"), "spearman": _corr(a, b, "spearman"),
        "mean_abs_difference": round(float(np.mean(np.abs(a - b))), 4) if len(a) else None,
        "reward_sign_agreement": round(float(np.mean(sign(a) == sign(b))), 4) if len(a) else None,
        "run_teacher": {"mean": round(float(a.mean()), 4), "std": round(float(a.std()), 4),
                        "distinct_scores": sorted({float(x) for x in a})},
        "reference_teacher": {"mean": round(float(b.mean()), 4), "std": round(float(b.std()), 4),
                              "distinct_scores": sorted({float(x) for x in b})},
    }


def teacher_usage(results: RunResults) -> dict:
    """Each Teacher-calling stage's usage (its summary.json, per round, as the manifest lists the steps)
    and their sum."""
    per_stage, total = {}, {"requests": 0, "calls": 0, "invalid_replies": 0, "repairs": 0}
    for name, step in (results.manifest or {}).get("stages", {}).items():
        s = results.summary(step["stage"], step.get("round"), step.get("arm"))
        usage = s.get(USAGE_KEYS.get(s.get("stage"), ""))
        if not usage:
            continue
        per_stage[name] = {k: usage.get(k) for k in ("model", "requests", "calls", "cache_hits", "invalid_replies",
                                                     "repairs", "response_format", "response_format_fallbacks",
                                                     "prompt_tokens", "completion_tokens")}
        per_stage[name]["endpoint"] = usage.get("endpoint") or s.get("judge_endpoint")
        per_stage[name]["dropped"] = s.get("dropped", s.get("eval_dropped_before"))
        for k in total:
            total[k] += usage.get(k) or 0
    total["invalid_reply_share"] = round(total["invalid_replies"] / total["requests"], 4) if total["requests"] else None
    return {"per_stage": per_stage, "total": total}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=str(ROOT / "outputs" / "smoke_llm_teacher"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm_teacher_agreement.json"))
    args = ap.parse_args(argv)
    run = Path(args.run)
    results = read_run_dir(run)
    if results.manifest is None:
        raise SystemExit(f"{run}: no manifest.json: is it a run folder (aresnb run ...)?")
    manifest = results.manifest
    stages = {name: {"status": st["status"], "wall_time_s": st.get("wall_time_s")}
              for name, st in manifest["stages"].items()}
    result = {
        "benchmark": "llm_teacher_agreement", "run": str(run), "params_hash": manifest.get("params_hash"),
        "teacher_model": manifest["params"]["teacher"]["model"],
        "local_backend": manifest["params"]["teacher"]["local_backend"],
        "stages": stages, "all_stages_done": all(s["status"] == "done" for s in stages.values()),
        "stage_wall_time_s": round(sum(s["wall_time_s"] or 0 for s in stages.values()), 1),
        "teacher_usage": teacher_usage(results), "agreement_with_reference_stage03": agreement(run),
    }
    write_json(args.out, result)
    u, ag = result["teacher_usage"]["total"], result["agreement_with_reference_stage03"]
    print(f"stages done: {result['all_stages_done']}; stage wall time {result['stage_wall_time_s']} s; "
          f"requests {u['requests']}, invalid replies {u['invalid_replies']} ({u['invalid_reply_share']}); "
          f"pearson {ag['pearson']}, spearman {ag['spearman']} over {ag['sentences']} sentences; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
