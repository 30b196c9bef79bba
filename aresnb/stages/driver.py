"""The stage driver: what every stage does around its own work, written once.

A stage's ``run`` is ``drive(cfg, paths, STAGE, compute, round_index, arm, heavy=heavy_step)``. The driver

1. returns the stored summary of a step the manifest records done with the key it would have now
   (:func:`aresnb.stages.steps.reusable_summary`: a notebook opened on a finished run shows its results);
2. makes the stage's folder and hands ``compute`` a :class:`StageRun`: the step's parameters,
   folder, problems and features, trackers, its heavy step and :meth:`StageRun.inputs_key`;
3. times ``compute``, writes what it returns to ``summary.json`` with ``wall_time_s``, then runs
   the stage's ``after`` (its output check -- a failed check leaves the summary on disk to read --
   and closing lines).

The heavy step (``heavy_step(run) -> dict`` in the stage module, declared in
:data:`aresnb.stages.SPECS`) runs in the kernel with one process, else under ``accelerate launch``
(``run.num_processes``): the resolved parameters go to ``<stage>/launch/params.yaml``, every
process runs ``python -m aresnb.stages.launch STAGE ...`` and the main one writes the dict it
returns to ``result.json``, which :meth:`StageRun.heavy` reads back.

Resumable work inside a step keys on :meth:`StageRun.inputs_key`, one hash of the stage's
declared parameter sections, the seed, the step and the signatures of the upstream artefacts it
declares reading: stage 03's sampled batches, stage 04's before-PPO score and stage 05's
generated rationales and corrections all use it. The trainers' checkpoints and the Teacher
cache keep their own keys: they resume inside a trainer and across runs.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from aresnb.config import Config
from aresnb.io import read_json, write_json
from aresnb.model.checkpoints import dir_signature, fingerprint
from aresnb.model.tracking import Tracking
from aresnb.paths import ROUND_STAGES, RunPaths
from aresnb.progress import say
from aresnb.stages import MODULES, SPECS, StageSpec
from aresnb.stages.steps import keyed_values, reusable_summary

ENTRY = "aresnb.stages.launch"

# The upstream artefacts a stage can declare reading, by name: where each lies for one step.
ARTEFACTS: dict[str, Callable[[RunPaths, int | None, str | None], Path]] = {
    "dataset": lambda paths, r, arm: paths.dataset_dir,
    "features": lambda paths, r, arm: paths.features_file("train").parent,
    "policy": lambda paths, r, arm: paths.policy_entering_round(r),  # what 03 samples and 04 trains
    "samples": lambda paths, r, arm: paths.samples_file(r),  # 03's scored buffer, what 04 trains on
    # what 05 corrects and fine-tunes: the round's PPO policy (the baseline for correction_only)
    "corrected": lambda paths, r, arm: paths.model_to_correct(r, arm),
}
# Declared reads that no single file or folder holds (06 and 07 read every evaluated model, which
# ares.arms decides): documentation only, never signed (neither stage resumes inside its step).
UNSIGNED = {"models"}


@dataclass(frozen=True)
class StageRun:
    """One step of a stage (a round's, an arm's): its parameters, its folder, what it reads."""

    spec: StageSpec
    cfg: Config
    paths: RunPaths
    round_index: int | None = None
    arm: str | None = None
    # the stage's heavy_step, handed over by drive(); None: looked up by the stage's name
    heavy_step: Callable[["StageRun"], dict] | None = field(default=None, compare=False, repr=False)

    @property
    def dir(self) -> Path:
        return self.paths.stage_dir(self.spec.name, self.round_index, self.arm)

    @property
    def label(self) -> str:
        """The step's name in logs and trackers: ``02_baseline``, ``round_1/04_ppo``, ``correction_only/05_...``."""
        if self.arm is not None:
            return f"{self.arm}/{self.spec.name}"
        return self.spec.name if self.round_index is None else f"round_{self.round_index}/{self.spec.name}"

    def problems(self) -> Any:
        """The DatasetDict (train/val/test) stage 01 wrote."""
        return load_problems(self.paths)

    def features(self, split: str) -> Any:
        """(N, P, D) features of ``split``; row i belongs to row i of ``problems()[split]``."""
        return load_features(self.paths, split)

    def tracking(self, name: str, hyperparameters: dict[str, Any]) -> Tracking:
        """The experiment trackers (``run.log_with``) of one trainer, logging under ``<run>/tracking/<name>``."""
        return Tracking(tuple(self.cfg.run.log_with), str(self.paths.tracking_dir()), name, hyperparameters)

    def inputs_key(self, *parts: Any, sections: tuple[str, ...] | None = None) -> str:
        """The one key of this step's inputs: its declared parameter sections (or ``sections``,
        for work that reads fewer; as the step key sees them), the seed and the precision, the
        step, the signatures (names, sizes, mtimes) of the upstream artefacts it declares, and
        ``parts``. Work resumed inside a step is kept only while this key holds."""
        values = keyed_values(self.cfg)
        chosen = self.spec.sections if sections is None else sections
        signed = [(name, str(where := ARTEFACTS[name](self.paths, self.round_index, self.arm)), _signature(where))
                  for name in self.spec.reads if name not in UNSIGNED]
        # of the run section, the seed and the precision change what a step computes
        return fingerprint(self.label, self.cfg.run.seed, self.cfg.run.mixed_precision,
                           {s: values[s] for s in chosen}, signed, *parts)

    def heavy(self, log: Callable[[str], None] = say) -> dict:
        """The stage's heavy step on ``run.num_processes`` processes; what the main process returned."""
        from aresnb.model.distributed import accelerate_command, launched, run_launched

        n = self.cfg.run.num_processes
        if n == 1 or launched():
            return (self.heavy_step or heavy_step_of(self.spec.name))(self)
        folder = self.paths.launch_dir(self.spec.name, self.round_index, self.arm)
        params, result = folder / "params.yaml", folder / "result.json"
        params.write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        result.unlink(missing_ok=True)
        args = [self.spec.name, "--params", str(params), "--result", str(result), "--expect-hash", self.cfg.hash()]
        if self.round_index is not None:
            args += ["--round", str(self.round_index)]
        if self.arm is not None:
            args += ["--arm", self.arm]
        log(f"{self.spec.name}: the heavy step on {n} processes (accelerate launch)")
        run_launched(accelerate_command(ENTRY, args, n, self.cfg.run.mixed_precision, self.cfg.run.accelerate_config), log)
        if not result.exists():
            raise RuntimeError(f"{self.spec.name}: the launched step ended without writing {result}")
        return read_json(result)


def load_problems(paths: RunPaths) -> Any:
    """The DatasetDict (train/val/test) stage 01 wrote: how every later stage reads its problems."""
    import datasets  # deferred: only what reads problems pays for the import

    if not (paths.dataset_dir / "dataset_dict.json").exists():
        raise FileNotFoundError(f"no dataset at {paths.dataset_dir}: run stage 01 (notebooks/01_data.ipynb) first")
    return datasets.load_from_disk(str(paths.dataset_dir))


def load_features(paths: RunPaths, split: str) -> np.ndarray:
    """(N, P, D) features of ``split``; row i belongs to row i of ``load_problems(paths)[split]``."""
    file = paths.features_file(split)
    if not file.exists():
        raise FileNotFoundError(f"no features at {file}: run stage 01 (notebooks/01_data.ipynb) first")
    return np.load(file)


def _signature(path: Path) -> Any:
    if path.is_dir():
        return dir_signature(path)
    return [path.stat().st_size, path.stat().st_mtime_ns] if path.exists() else None


def heavy_step_of(stage: str) -> Callable[[StageRun], dict]:
    """The ``heavy_step`` of a stage's module (imported here: it loads torch)."""
    if stage not in MODULES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(MODULES)}")
    module = importlib.import_module(f"aresnb.stages.{MODULES[stage]}")
    if not SPECS[stage].heavy or not hasattr(module, "heavy_step"):
        raise ValueError(f"stage {stage} has no heavy step to launch")
    return module.heavy_step


def stage_run(cfg: Config, paths: RunPaths, stage: str, round_index: int | None = None,
              arm: str | None = None, heavy: Callable[[StageRun], dict] | None = None) -> StageRun:
    """The :class:`StageRun` of one step (a round stage's round defaults to 1; others have none)."""
    round_index = (round_index or 1) if stage in ROUND_STAGES else None
    return StageRun(SPECS[stage], cfg, paths, round_index, arm, heavy)


def stored_summary(run: StageRun) -> dict | None:
    """The summary of this step's finished run when it can be reused as it is (else None), saying so."""
    summary = reusable_summary(run.cfg, run.paths, run.spec.name, run.round_index, arm=run.arm)
    if summary is not None:
        say(f"{run.label}: finished before with these parameters and inputs; showing its stored results "
            "(aresnb run --force recomputes)")
    return summary


def drive(cfg: Config, paths: RunPaths, stage: str, compute: Callable[[StageRun], dict],
          round_index: int | None = None, arm: str | None = None,
          after: Callable[[StageRun, dict], None] | None = None,
          heavy: Callable[[StageRun], dict] | None = None) -> dict:
    """Run one step of ``stage``: reuse, folder, ``compute(run)``, timing, ``summary.json``, then
    ``after(run, summary)`` (the stage's output check, its closing lines)."""
    run = stage_run(cfg, paths, stage, round_index, arm, heavy)
    if (stored := stored_summary(run)) is not None:
        return stored
    started = time.perf_counter()
    run.dir  # made before compute reads or writes anything
    summary = compute(run)
    summary["wall_time_s"] = round(time.perf_counter() - started, 3)
    write_json(paths.summary_file(stage, run.round_index, arm), summary)
    if after is not None:
        after(run, summary)
    return summary
