"""The stage floor: one module per notebook, named after it.

    01_data            aresnb.stages.data
    02_baseline        aresnb.stages.baseline
    03_teacher_scores  aresnb.stages.teacher_scores
    04_ppo             aresnb.stages.ppo
    05_correction_sft  aresnb.stages.correction_sft
    06_answer_lora     aresnb.stages.answer_lora
    07_evaluation      aresnb.stages.evaluation

Each has the same face: ``run(cfg, paths, round_index=None) -> dict`` does the stage's work and
returns its summary (also written to ``summary.json``); ``load(cfg, paths, round_index=None) ->
dict`` reads a finished stage back from disk (summary and artefacts) without recomputing. These
modules are the only code that knows the run folder (through :class:`aresnb.paths.RunPaths`) and
the order of the stages; the algorithm modules below them take plain arguments.

A stage whose run the manifest records done with the key the runner would give it now returns
that stored summary from ``run`` instead of recomputing (:func:`stored_summary`; the rule is
``aresnb.steps``): a notebook opened on a finished run shows its results.

Importing this package is light: a stage module (and torch) loads only when it is imported.
"""

from __future__ import annotations

from typing import Any

from aresnb import paths as _paths
from aresnb import progress
from aresnb.config import Config, load_config
from aresnb.paths import RunPaths
from aresnb.steps import reusable_summary
from aresnb.tracking import Tracking

MODULES = {
    _paths.DATA: "data",
    _paths.BASELINE: "baseline",
    _paths.TEACHER_SCORES: "teacher_scores",
    _paths.PPO: "ppo",
    _paths.CORRECTION_SFT: "correction_sft",
    _paths.ANSWER_LORA: "answer_lora",
    _paths.EVALUATION: "evaluation",
}


def open_run(params: Any = None) -> tuple[Config, RunPaths]:
    """(cfg, paths) of a notebook's ``params``: the runner's dict, a YAML path, or None (smoke.yaml)."""
    cfg = load_config(params)
    progress.configure(cfg.run.progress_every_percent)
    return cfg, RunPaths(cfg)


def stored_summary(cfg: Config, paths: RunPaths, stage: str, round_index: int | None = None,
                   arm: str | None = None) -> dict | None:
    """The summary of this stage's finished run when it can be reused as it is (else None), saying so."""
    summary = reusable_summary(cfg, paths, stage, round_index, arm=arm)
    if summary is not None:
        where = stage if stage not in _paths.ROUND_STAGES else f"round_{round_index}/{stage}"
        where = f"{arm}/{stage}" if arm is not None else where
        progress.say(f"{where}: finished before with these parameters and inputs; showing its stored results "
                     "(aresnb run --force recomputes)")
    return summary


def tracking(cfg: Config, paths: RunPaths, name: str, hyperparameters: dict[str, Any]) -> Tracking:
    """The experiment trackers (``run.log_with``) of one trainer, logging under ``<run>/tracking/<name>``."""
    return Tracking(tuple(cfg.run.log_with), str(paths.tracking_dir()), name, hyperparameters)
