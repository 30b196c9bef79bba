"""The stage floor: one module per notebook, named after it, each declared once below.

    01_data            aresnb.stages.data
    02_baseline        aresnb.stages.baseline
    03_teacher_scores  aresnb.stages.teacher_scores
    04_ppo             aresnb.stages.ppo
    05_correction_sft  aresnb.stages.correction_sft
    06_answer_lora     aresnb.stages.answer_lora
    07_evaluation      aresnb.stages.evaluation

Each has the same face: ``run(cfg, paths, round_index=None) -> dict`` does the stage's work and
returns its summary (also written to ``summary.json``); ``load(cfg, paths, round_index=None)``
reads a finished stage back from disk without recomputing, as a frozen ``<Stage>Result`` (its
summary and the artefacts its notebook shows). These
modules are the only code that knows the run folder (through :class:`aresnb.paths.RunPaths`) and
the order of the stages; the algorithm modules below them take plain arguments.

What every stage does around its own work -- reuse of a finished step, its folder, timing,
``summary.json``, the heavy step in the kernel or under ``accelerate launch``, the key that
resumable work inside a step is tied to -- is :mod:`aresnb.stages.driver`, written once, reading
the declarations here.

Importing this package is light (the runner reads the declarations): a stage module (and torch)
loads only when it is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aresnb import paths as _paths
from aresnb import progress
from aresnb.config import Config, load_config
from aresnb.paths import RunPaths


@dataclass(frozen=True)
class StageSpec:
    """What a stage is, declared once: the driver, the step key and the docs read it from here."""

    name: str  # its folder under outputs/<run>/, its notebook's name, its label in the manifest
    module: str  # aresnb.stages.<module>
    sections: tuple[str, ...]  # the parameter sections it reads: with its code and its inputs' completions, its step key
    reads: tuple[str, ...]  # the upstream artefacts it reads (names of the driver's ARTEFACTS)
    writes: tuple[str, ...]  # what it writes under its folder, besides summary.json
    heavy: str = ""  # its heavy step (on run.num_processes processes under accelerate launch); "" = none
    per_round: bool = False  # runs once per ARES round (round_<i>/<name>/)


# Upstream sections need not be listed in ``sections``: a change there re-runs the upstream stage,
# whose new completion changes every downstream key.
SPECS: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec(_paths.DATA, "data", ("data", "features"), (),
              ("dataset/", "features/{train,val,test}.npy")),
    StageSpec(_paths.BASELINE, "baseline", ("model", "baseline"), ("dataset", "features"),
              ("model/", "checkpoints/", "metrics.jsonl", "rationales_{val,test}.jsonl"),
              heavy="SFT of the rationale model on QCM-E"),
    StageSpec(_paths.TEACHER_SCORES, "teacher_scores", ("rollout", "teacher"), ("dataset", "features", "policy"),
              ("rollouts.jsonl", "samples.parquet"), heavy="sampling the round's rollouts", per_round=True),
    StageSpec(_paths.PPO, "ppo", ("ppo", "teacher"), ("dataset", "features", "policy", "samples"),
              ("policy/", "value/", "checkpoints/", "metrics.jsonl", "eval_{before,after}.json"),
              heavy="PPO on the round's buffer", per_round=True),
    StageSpec(_paths.CORRECTION_SFT, "correction_sft", ("correction", "teacher"), ("dataset", "features", "corrected"),
              ("corrections.parquet", "rl_rationales_*.jsonl", "model/", "checkpoints/", "metrics.jsonl"),
              heavy="SFT on the Teacher's corrections", per_round=True),
    StageSpec(_paths.ANSWER_LORA, "answer_lora", ("answer", "ares"), ("dataset", "features", "models"),
              ("<model>/<format>/{adapter/,predictions_test.jsonl,head_summary.json}",),
              heavy="training the LoRA answer heads"),  # ares.arms: which models get heads
    StageSpec(_paths.EVALUATION, "evaluation", ("evaluation", "teacher", "ares"), ("dataset", "models"),
              ("judgments*.jsonl",)),  # ares.arms: which comparisons the judge makes
)}
MODULES = {name: spec.module for name, spec in SPECS.items()}


def open_run(params: Any = None) -> tuple[Config, RunPaths]:
    """(cfg, paths) of a notebook's ``params``: the runner's dict, a YAML path, or None (smoke.yaml)."""
    cfg = load_config(params)
    progress.configure(cfg.run.progress_every_percent)
    return cfg, RunPaths(cfg)
