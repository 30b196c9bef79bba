"""A stage's heavy step, in the notebook's kernel or under ``accelerate launch`` (``run.num_processes``).

Stages 02-06 each have one ``heavy_step(cfg, paths, round_index) -> dict``: 02, 05 and 06 train
(the baseline, the SFT on corrections, the LoRA answer heads), 03 samples the round's rollouts
(sharded by problem batch), 04 runs PPO. It reads its inputs from the run folder and writes its
results there; the dict it returns is small (what the summary needs). With one process the stage
calls it directly; with N it writes the resolved parameters to ``<stage>/launch/params.yaml`` and
runs::

    accelerate launch --num_processes N [--config_file run.accelerate_config | --multi_gpu] \\
        -m aresnb.stages.launch STAGE --params <stage>/launch/params.yaml [--round R] --result ...

streaming its output into the cell; the main process writes the returned dict to ``result.json``,
which the stage reads back. The same command runs a heavy step by hand.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable

import torch
import yaml

from aresnb.config import load_config
from aresnb.distributed import accelerate_command, launched, process_rank, run_launched
from aresnb.io import read_json, write_json
from aresnb.paths import RunPaths
from aresnb.stages import MODULES

ENTRY = "aresnb.stages.launch"


def _stage_module(stage: str) -> Any:
    if stage not in MODULES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(MODULES)}")
    module = importlib.import_module(f"aresnb.stages.{MODULES[stage]}")
    if not hasattr(module, "heavy_step"):
        raise ValueError(f"stage {stage} has no heavy step to launch")
    return module


def run_heavy(cfg: Any, paths: RunPaths, stage: str, round_index: int | None = None,
              log: Callable[[str], None] = print, arm: str | None = None) -> dict:
    """The stage's heavy step on ``run.num_processes`` processes; returns what the main process returned.
    ``arm``: an ablation arm's own step (stage 05 of ``correction_only``)."""
    module = _stage_module(stage)
    n = cfg.run.num_processes
    if n == 1 or launched():
        return module.heavy_step(cfg, paths, round_index, **_arm_kwargs(arm))
    folder = paths.launch_dir(stage, round_index, arm)
    params, result = folder / "params.yaml", folder / "result.json"
    params.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    result.unlink(missing_ok=True)
    args = [stage, "--params", str(params), "--result", str(result), "--expect-hash", cfg.hash()]
    if round_index is not None:
        args += ["--round", str(round_index)]
    if arm is not None:
        args += ["--arm", arm]
    log(f"{stage}: the heavy step on {n} processes (accelerate launch)")
    run_launched(accelerate_command(ENTRY, args, n, cfg.run.mixed_precision, cfg.run.accelerate_config), log)
    if not result.exists():
        raise RuntimeError(f"{stage}: the launched step ended without writing {result}")
    return read_json(result)


def _arm_kwargs(arm: str | None) -> dict:
    """Only stage 05 knows arms: the other heavy steps are called as they always were."""
    return {} if arm is None else {"arm": arm}


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
    result = _stage_module(args.stage).heavy_step(cfg, RunPaths(cfg), args.round_index, **_arm_kwargs(args.arm))
    if args.result and process_rank()[0] == 0:
        write_json(args.result, result)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # once, after every trainer of the step is done


if __name__ == "__main__":
    main()
