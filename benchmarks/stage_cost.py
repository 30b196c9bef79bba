"""Stage cost: stage 06 (the LoRA answer heads) against stage 04 (PPO) in the same finished run.

    .venv/bin/python benchmarks/stage_cost.py --run outputs/<run> [--out PATH]

Reads the run's ``manifest.json`` (each stage's wall time, CPU time -- the CPU seconds of the
stage's kernel and what it started, steadier than wall time when other jobs share the machine --
and processes) and stage 06's ``summary.json`` (each head's training and evaluation time), and
writes ``benchmarks/results/stage_cost_<run>.json``: every stage, the ratios of stage 06 to its
named peer stage 04 (wall and CPU), and the heads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aresnb.stages.results import read_run_dir  # noqa: E402
PEER, SUBJECT = "round_1/04_ppo", "06_answer_lora"


def stage_cost(run_dir: Path) -> dict:
    run = read_run_dir(run_dir)
    manifest = run.manifest
    stages = {label: {k: entry.get(k) for k in ("wall_time_s", "cpu_time_s", "processes")}
              for label, entry in manifest["stages"].items() if entry.get("status") == "done"}
    missing = [s for s in (PEER, SUBJECT) if s not in stages]
    if missing:
        raise SystemExit(f"{run_dir}: stages {missing} have not completed")
    heads = run.summary(SUBJECT)["head_time_s"]
    params = manifest["params"]

    def ratio(key: str) -> float | None:
        a, b = stages[SUBJECT][key], stages[PEER][key]
        return round(a / b, 3) if a and b else None

    return {
        "benchmark": "stage_cost", "run": str(run_dir), "peer": PEER, "subject": SUBJECT,
        "data": {"source": params["data"]["source"], "synthetic": params["data"]["synthetic"]},
        "recipe": {"answer.train": params["answer"]["train"], "answer.formats": params["answer"]["formats"],
                   "answer.image_ablation": params["answer"]["image_ablation"], "ppo": {
                       k: params["ppo"][k] for k in ("batch_size", "micro_batch_size", "ppo_epochs")}},
        "stages": stages,
        "ratios": {"06_vs_04_wall": ratio("wall_time_s"), "06_vs_04_cpu": ratio("cpu_time_s")},
        "heads": {label: {k: round(v, 2) for k, v in t.items()} for label, t in heads.items()},
        "machine": {"cpus": os.cpu_count(), "cpu_threads": params["run"]["cpu_threads"]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished run folder, outputs/<run>")
    ap.add_argument("--out", default=None, help="default benchmarks/results/stage_cost_<run>.json")
    args = ap.parse_args(argv)
    run_dir = Path(args.run)
    report = stage_cost(run_dir)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"stage_cost_{run_dir.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{out}: stage 06 / stage 04 = {report['ratios']['06_vs_04_wall']} (wall), "
          f"{report['ratios']['06_vs_04_cpu']} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
