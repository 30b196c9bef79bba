"""A stage's heavy step as its own process: what ``accelerate launch`` runs on every process.

:meth:`aresnb.stages.driver.StageRun.heavy` starts it with ``run.num_processes`` > 1::

    accelerate launch --num_processes N [--config_file run.accelerate_config | --multi_gpu] \\
        -m aresnb.stages.launch STAGE --params <stage>/launch/params.yaml [--round R] [--arm A] --result ...

and the main process writes the step's dict to ``result.json``. The same command runs a heavy
step by hand.
"""

from __future__ import annotations

import argparse

import torch

from aresnb.config import load_config
from aresnb.io import write_json
from aresnb.model.distributed import process_rank
from aresnb.paths import RunPaths
from aresnb.stages.driver import heavy_step_of, stage_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run one stage's heavy step (under accelerate launch).")
    ap.add_argument("stage", help="e.g. 04_ppo")
    ap.add_argument("--params", required=True, help="resolved parameter YAML")
    ap.add_argument("--round", type=int, default=None, dest="round_index")
    ap.add_argument("--arm", default=None, help="an ablation arm's step, e.g. correction_only (stage 05)")
    ap.add_argument("--result", default=None, help="where the main process writes the step's result (JSON)")
    ap.add_argument("--expect-hash", default=None, help="fail unless the parameters resolve to this hash")
    args = ap.parse_args(argv)
    cfg = load_config(args.params)
    if args.expect_hash and cfg.hash() != args.expect_hash:
        raise SystemExit(f"{args.params} resolves to parameters {cfg.hash()}, not {args.expect_hash}")
    step = heavy_step_of(args.stage)
    result = step(stage_run(cfg, RunPaths(cfg), args.stage, args.round_index, args.arm))
    if args.result and process_rank()[0] == 0:
        write_json(args.result, result)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # once, after every trainer of the step is done


if __name__ == "__main__":
    main()
