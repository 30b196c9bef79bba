"""Does the embedded default show ARES's effect? The whole pipeline once per seed, then the verdicts.

    .venv/bin/python benchmarks/ares_effect.py [--seeds 3] [--out benchmarks/results/ares_effect.json]
                                               [--params params/smoke.yaml] [--set KEY=VALUE ...] [--jobs 2]
    .venv/bin/python benchmarks/ares_effect.py --arms [--teacher-error 0.2]   # what each half adds:
                                               benchmarks/ablation.py -> benchmarks/results/ares_ablation.json

Each seed is a full ``aresnb run`` (the papermill pipeline, as ``make reproduce`` runs it) into its
own run folder under ``--runs-dir``, ``--jobs`` seeds at a time (each stage runs on one thread,
``run.cpu_threads``, so two seeds share a 2-core machine without slowing each other much; the
per-seed stage times are measured under that load and reported as they are); nothing is computed here but statistics of the runs' own
``summary.json`` files and judgments. ``per_seed`` has one object per seed, ``pooled`` the same
keys over all seeds: the win rate pooled over every judged problem of every seed (bootstrap 95%
interval over problems), the held-out Teacher score pooled over every scored val problem (paired
bootstrap of the change), the other figures as means over seeds with their range. Then one
verdict line per outcome ARES should show (pooled, and in direction for every seed); an outcome
that is not reached says FAIL, here and in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aresnb.evaluation.intervals import hierarchical_bootstrap  # noqa: E402
from aresnb.stages.results import RunResults, read_run_dir  # noqa: E402

POINTS = ("before_rl", "after_rl", "after_sft")
DEFAULT_RUNS = ROOT / "outputs" / "ares_effect"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ares_effect.json"
TARGETS = {"win_rate": 0.60, "test_problems": 200, "stage_time_s": 360.0, "benchmark_s": 25 * 60.0}


def run_seed(params: str, seed: int, runs_dir: Path, overrides: list[str], name: str | None = None) -> Path:
    name = name or f"effect_seed{seed}"
    cmd = [sys.executable, "-m", "aresnb.pipeline.cli", "run", params, "--set", f"run.seed={seed}",
           "--set", f"run.name={name}", "--set", f"run.output_dir={runs_dir}", "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "ARESNB_TEACHER_KEY": os.environ.get("ARESNB_TEACHER_KEY", "local")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}: aresnb run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return runs_dir / name


def seed_result(run: RunResults) -> dict:
    """The figures of one run (its results, as aresnb.stages.results reads them)."""
    rounds = run.rounds
    s4, s6, s7 = (run.summary(st, rounds if st == "04_ppo" else None) for st in ("04_ppo", "06_answer_lora", "07_evaluation"))
    degeneration = s7["degeneration"]
    claims = s7["claims"] or {}
    acc = s6["accuracy"]
    manifest = run.manifest
    return {
        "teacher_score_before": s4["teacher_score_before"],
        "teacher_score_after": s4["teacher_score_after"],
        "repeated_rate": {p: degeneration[_point(p)]["repeated_sentence_rate"] for p in POINTS if _point(p) in degeneration},
        "unfinished_rate": {p: degeneration[_point(p)]["unfinished_sentence_rate"] for p in POINTS if _point(p) in degeneration},
        "win_rate": s7["win_rate"],
        "win_rate_ci95": s7["win_rate_ci95"],
        "decisive_win_rate": s7["decisive_win_rate"],
        "accuracy": {m: {"qcm_a": acc.get(k, {}).get("QCM-A", {}).get("Avg"),
                         "qcmg_a": acc.get(k, {}).get("QCMG-A", {}).get("Avg")}
                     for m, k in (("baseline", "baseline"), ("ares", "ares"))},
        "true_claim_share": {m: (claims.get(p) or {}).get("all", {}).get("true_share")
                             for m, p in (("baseline", "baseline"), ("ares", "after_sft"))},
        "false_claim_share": {m: (claims.get(p) or {}).get("all", {}).get("false_share")
                              for m, p in (("baseline", "baseline"), ("ares", "after_sft"))},
        "image_ablation": {k: (s6.get("image_ablation") or {}).get(f"accuracy_{k}_image") for k in ("with", "without")},
        "test_problems": s7["test_problems"],
        "stage_time_s": round(sum(v.get("wall_time_s", 0) for v in manifest["stages"].values()), 1),
        "run_dir": str(run.outputs.run_dir),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}%"


def _point(p: str) -> str:
    return "baseline" if p == "before_rl" else p


def _seed_level_interval(groups: list[np.ndarray]) -> list[float]:
    """95% interval of the pooled mean resampling seeds, then problems (one array per seed)."""
    return list(hierarchical_bootstrap([(g, np.ones_like(g)) for g in groups], 5000, 0))


def pooled_result(runs: list[RunResults], per_seed: list[dict]) -> dict:
    """Win rate over every judged problem of every seed; held-out score over every val problem;
    both intervals resample seeds, then problems."""
    picks = [np.array([1.0 if r["sides"][0] == "ares" else 0.0 for r in run.judgments]) for run in runs]
    before, after = [], []
    for run in runs:
        b = {r["qid"]: r["score"] for r in run.ppo_eval[(run.rounds, "before")]}
        a = {r["qid"]: r["score"] for r in run.ppo_eval[(run.rounds, "after")]}
        both = [q for q in b if b[q] is not None and a.get(q) is not None]
        before.append(np.array([b[q] for q in both]))
        after.append(np.array([a[q] for q in both]))
    deltas = [a - b for a, b in zip(after, before)]
    delta, all_picks = np.concatenate(deltas), np.concatenate(picks)

    def mean(key, *sub):
        vals = [_get(s, key, *sub) for s in per_seed]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None

    return {
        "teacher_score_before": float(np.concatenate(before).mean()),
        "teacher_score_after": float(np.concatenate(after).mean()),
        "teacher_score_delta": float(delta.mean()), "teacher_score_delta_ci95": _seed_level_interval(deltas),
        "repeated_rate": {p: mean("repeated_rate", p) for p in POINTS},
        "unfinished_rate": {p: mean("unfinished_rate", p) for p in POINTS},
        "win_rate": float(all_picks.mean()), "win_rate_ci95": _seed_level_interval(picks),
        "judged_problems": int(len(all_picks)),
        "decisive_win_rate": mean("decisive_win_rate"),
        "accuracy": {m: {f: mean("accuracy", m, f) for f in ("qcm_a", "qcmg_a")} for m in ("baseline", "ares")},
        "true_claim_share": {m: mean("true_claim_share", m) for m in ("baseline", "ares")},
        "false_claim_share": {m: mean("false_claim_share", m) for m in ("baseline", "ares")},
        "image_ablation": {k: mean("image_ablation", k) for k in ("with", "without")},
        "test_problems": sum(s["test_problems"] for s in per_seed),
        "spread": {k: [min(_get(s, *k.split(".")) for s in per_seed), max(_get(s, *k.split(".")) for s in per_seed)]
                   for k in ("win_rate", "teacher_score_after", "accuracy.ares.qcmg_a", "accuracy.baseline.qcmg_a")
                   if all(_get(s, *k.split(".")) is not None for s in per_seed)},
    }


def _get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def verdicts(per_seed: list[dict], pooled: dict, benchmark_s: float, jobs: int = 1) -> list[dict]:
    """One line per outcome the embedded default must show: pooled, and in direction for every seed."""
    def le(a, b):
        return a is not None and b is not None and a <= b + 1e-12

    def line(name, ok, detail):
        return {"outcome": name, "pass": bool(ok), "detail": detail}

    seeds_up = [s["teacher_score_after"] > s["teacher_score_before"] for s in per_seed]
    out = [line("held-out Teacher score after PPO above before",
                pooled["teacher_score_delta"] > 0 and all(seeds_up),
                f"pooled {pooled['teacher_score_before']:.3f} -> {pooled['teacher_score_after']:.3f} (change "
                f"{pooled['teacher_score_delta']:+.3f}, 95% CI seeds then problems {pooled['teacher_score_delta_ci95'][0]:+.3f} to "
                f"{pooled['teacher_score_delta_ci95'][1]:+.3f}); per seed "
                + " ".join(f"{s['teacher_score_after'] - s['teacher_score_before']:+.3f}" for s in per_seed))]
    for rate in ("repeated_rate", "unfinished_rate"):
        ok = le(pooled[rate]["after_sft"], pooled[rate]["after_rl"]) and all(
            le(s[rate].get("after_sft"), s[rate].get("after_rl")) for s in per_seed)
        out.append(line(f"after SFT, {rate.replace('_', ' ')} at or below after RL", ok,
                        f"pooled {pooled[rate]['before_rl']:.3f} / {pooled[rate]['after_rl']:.3f} / "
                        f"{pooled[rate]['after_sft']:.3f} (before RL / after RL / after SFT); per seed after RL -> "
                        "after SFT " + " ".join(f"{_rate(s[rate].get('after_rl'))}->{_rate(s[rate].get('after_sft'))}"
                                                for s in per_seed)))
    lo = pooled["win_rate_ci95"][0]
    out.append(line(f"win rate (paper protocol) >= {TARGETS['win_rate']:.0%}, seed-level 95% CI above 50%",
                    pooled["win_rate"] >= TARGETS["win_rate"] and lo > 0.5 and all(s["win_rate"] > 0.5 for s in per_seed),
                    f"pooled {pooled['win_rate']:.1%} (95% CI seeds then problems {lo:.1%} to {pooled['win_rate_ci95'][1]:.1%}, "
                    f"{pooled['judged_problems']} problems); per seed " + " ".join(f"{s['win_rate']:.1%}" for s in per_seed)))
    acc = pooled["accuracy"]
    out.append(line("QCMG-A accuracy of ARES >= the baseline's",
                    le(acc["baseline"]["qcmg_a"], acc["ares"]["qcmg_a"]) and all(
                        le(s["accuracy"]["baseline"]["qcmg_a"], s["accuracy"]["ares"]["qcmg_a"]) for s in per_seed),
                    f"pooled {acc['baseline']['qcmg_a']:.1f}% -> {acc['ares']['qcmg_a']:.1f}%; per seed "
                    + " ".join(f"{s['accuracy']['baseline']['qcmg_a']:.1f}->{s['accuracy']['ares']['qcmg_a']:.1f}"
                               for s in per_seed)))
    ab = pooled["image_ablation"]
    out.append(line("QCM-A accuracy with the image above the same head with its features zeroed",
                    ab["with"] is not None and ab["without"] is not None and ab["with"] > ab["without"] and all(
                        le(s["image_ablation"]["without"], s["image_ablation"]["with"]) for s in per_seed),
                    f"pooled {_pct(ab['without'])} without -> {_pct(ab['with'])} with; per seed "
                    + " ".join(f"{_pct(s['image_ablation']['without'])}->{_pct(s['image_ablation']['with'])}"
                               for s in per_seed)))
    t, f = pooled["true_claim_share"], pooled["false_claim_share"]
    out.append(line("true-claim share up and false-claim share down",
                    t["ares"] > t["baseline"] and f["ares"] < f["baseline"] and all(
                        s["true_claim_share"]["ares"] > s["true_claim_share"]["baseline"]
                        and s["false_claim_share"]["ares"] < s["false_claim_share"]["baseline"] for s in per_seed),
                    f"true {t['baseline']:.3f} -> {t['ares']:.3f}, false {f['baseline']:.3f} -> {f['ares']:.3f} (pooled); "
                    "per seed true/false " + " ".join(
                        f"{s['true_claim_share']['baseline']:.2f}->{s['true_claim_share']['ares']:.2f}/"
                        f"{s['false_claim_share']['baseline']:.2f}->{s['false_claim_share']['ares']:.2f}" for s in per_seed)))
    out.append(line(f"at least {TARGETS['test_problems']} test problems a seed",
                    all(s["test_problems"] >= TARGETS["test_problems"] for s in per_seed),
                    "per seed " + " ".join(str(s["test_problems"]) for s in per_seed)))
    out.append(line(f"stage time of one run <= {TARGETS['stage_time_s'] / 60:.0f} min on this machine",
                    all(s["stage_time_s"] <= TARGETS["stage_time_s"] for s in per_seed),
                    "per seed " + " ".join(f"{s['stage_time_s']:.0f} s" for s in per_seed)
                    + (f" (up to {jobs} seeds side by side, one thread each; `make reproduce` runs one on every core)"
                       if jobs > 1 else "")))
    out.append(line(f"the benchmark <= {TARGETS['benchmark_s'] / 60:.0f} min", benchmark_s <= TARGETS["benchmark_s"],
                    f"{benchmark_s / 60:.1f} min for {len(per_seed)} seeds"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--params", default=str(ROOT / "params" / "smoke.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every seed")
    ap.add_argument("--jobs", type=int, default=min(3, os.cpu_count() or 1), help="seeds run side by side")
    ap.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--arms", action="store_true",
                    help="the ablation arms (benchmarks/ablation.py): baseline, rl_only, correction_only, ares and "
                         "ares with 2 rounds per seed -> benchmarks/results/ares_ablation.json")
    ap.add_argument("--teacher-error", type=float, default=None, metavar="RATE",
                    help="with --arms: the same arms again with a reference Teacher that mis-grades this share of "
                         "checkable sentences (teacher.reference_error_rate)")
    ap.add_argument("--from-runs", action="store_true",
                    help="run nothing: recompute the figures and verdicts from the finished runs in --runs-dir, "
                         "keeping the wall time, jobs and commit that --out recorded when they ran")
    args = ap.parse_args()
    if args.arms:
        from ablation import run_arms  # noqa: E402 - benchmarks/ is this script's folder

        if args.out == DEFAULT_OUT:
            args.out = ROOT / "benchmarks" / "results" / "ares_ablation.json"
        if args.runs_dir == DEFAULT_RUNS:
            args.runs_dir = ROOT / "outputs" / "ares_ablation"
        run_arms(args, run_seed, _git_commit())
        return
    if args.teacher_error is not None:
        ap.error("--teacher-error goes with --arms")
    from aresnb.config import load_config

    rounds = load_config(args.params, args.set).ares.rounds
    started = time.time()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    def one(seed: int) -> Path:
        t = time.time()
        run = run_seed(args.params, seed, args.runs_dir, args.set)
        print(f"seed {seed}: done in {time.time() - t:.0f} s -> {run}", flush=True)
        return run

    recorded = {}
    if args.from_runs:
        recorded = json.loads(args.out.read_text())
        runs = [args.runs_dir / f"effect_seed{s}" for s in seeds]
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # threads only wait on subprocesses
            runs = list(pool.map(one, seeds))
    results = [read_run_dir(r, rounds) for r in runs]
    per_seed = [{"seed": s, **seed_result(r)} for s, r in zip(seeds, results)]
    pooled = pooled_result(results, per_seed)
    elapsed = recorded.get("wall_time_s", time.time() - started)
    jobs = recorded.get("jobs", args.jobs)
    lines = verdicts(per_seed, pooled, elapsed, jobs)
    report = {"benchmark": "ares_effect", "git_commit": recorded.get("git_commit", _git_commit()), "params": args.params,
              "overrides": args.set, "seeds": seeds,
              "per_seed": per_seed, "pooled": pooled, "verdicts": lines, "wall_time_s": round(elapsed, 1),
              "jobs": jobs,
              "machine": recorded.get("machine", {"cpus": os.cpu_count(), "load_average_end": os.getloadavg()})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    _print_verdicts(lines, args.out)


def _print_verdicts(lines: list[dict], out: Path) -> None:
    for v in lines:
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {v['outcome']}: {v['detail']}")
    print(f"-> {out}")


def _git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


if __name__ == "__main__":
    main()
