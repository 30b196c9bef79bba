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

Importing this package is light: a stage module (and torch) loads only when it is imported.
"""

from __future__ import annotations

from typing import Any

from aresnb import paths as _paths
from aresnb.config import Config, load_config
from aresnb.paths import RunPaths

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
    return cfg, RunPaths(cfg)
