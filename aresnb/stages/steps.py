"""The schedule of a run and the one rule that decides whether a finished step can be reused.

The schedule is 01, 02, then (03, 04, 05) once per ARES round, then stage 05 of the
``correction_only`` arm when ``ares.arms`` asks for it, then 06, 07. A step is *done
with the same key* when ``manifest.json`` records it done under the key :func:`step_key` gives
now: the hash of the parameters it reads, of its notebook's code and of the completions of the
steps before it. The runner skips such a step; a stage's ``run`` called from a notebook opened on
a finished run (``params = "outputs/smoke/params.yaml"``) returns its stored summary instead of
recomputing (:func:`reusable_summary`). Both ask this module, so the rule lives in one place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from aresnb.config import Config
from aresnb.data import registry as dataset_registry
from aresnb.io import read_json
from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_ONLY, CORRECTION_SFT, DATA, EVALUATION, ROUND_STAGES, RunPaths
from aresnb.stages import SPECS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


@dataclass(frozen=True)
class Step:
    """One scheduled execution of a stage's notebook (round stages run once per round; ``arm``:
    the step an ablation arm runs itself, stage 05 of ``correction_only``, as round 1 does it)."""

    stage: str
    round_index: int | None = None
    arm: str | None = None

    @property
    def label(self) -> str:
        if self.arm is not None:
            return f"{self.arm}/{self.stage}"
        return self.stage if self.round_index is None else f"round_{self.round_index}/{self.stage}"

    @property
    def output_name(self) -> str:
        suffix = f".{self.arm}" if self.arm is not None else "" if self.round_index is None else f".round_{self.round_index}"
        return f"{self.stage}{suffix}.ipynb"

    @property
    def notebook_parameters(self) -> dict:
        """What the runner injects besides ``params`` (the notebook's parameters cell has defaults)."""
        return {"round_index": self.round_index or 1, **({"arm": self.arm} if self.arm is not None else {})}


def build_schedule(rounds: int, arms: tuple[str, ...] | list[str] = ()) -> list[Step]:
    """Every step of a full run, in execution order."""
    steps = [Step(DATA), Step(BASELINE)]
    for r in range(1, rounds + 1):
        steps += [Step(stage, r) for stage in ROUND_STAGES]
    if CORRECTION_ONLY in arms:
        steps.append(Step(CORRECTION_SFT, 1, CORRECTION_ONLY))  # round 1's correction, on the baseline
    return steps + [Step(ANSWER_LORA), Step(EVALUATION)]


def run_schedule(cfg: Config) -> list[Step]:
    """The schedule of the run ``cfg`` describes."""
    return build_schedule(cfg.ares.rounds, cfg.ares.arms)


def upstream_of(step: Step, schedule: list[Step]) -> list[Step]:
    """The steps whose outputs this step reads: everything scheduled before it, except that an
    arm's step reads only the data and the baseline (adding an arm never re-runs the ARES rounds)."""
    before = schedule[: schedule.index(step)]
    if step.arm is not None:
        return [s for s in before if s.stage in (DATA, BASELINE)]
    return before


# The parameter sections each stage reads, as the stage declares them (aresnb.stages.SPECS).
STAGE_SECTIONS = {name: spec.sections for name, spec in SPECS.items()}

# Throughput-only teacher settings (concurrency, retries, rate limits) never change a reply (the
# cache sees to that); the thresholds of the output checks and the budget decide whether a stage
# fails, never what it wrote (so raising teacher.max_cost_usd after a stop re-runs no finished
# step); the estimate's assumptions (image_tokens, assumed_latency_s) only size reservations.
# tests/test_step_key.py holds every teacher field to this decision.
NOT_IN_STEP_KEY = {
    "teacher": ("concurrency", "max_retries", "timeout_s", "backoff_base_s", "backoff_max_s", "cassette", "max_drop_share",
                "max_requests_per_minute", "max_tokens_per_minute", "max_cost_usd", "image_tokens", "assumed_latency_s"),
    "data": ("allow_overlap",),
}


def sha(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def notebook_source_hash(path: Path) -> str:
    """Hash of the code cells only: re-saving a notebook in Jupyter does not invalidate a run."""
    nb = json.loads(Path(path).read_text())
    cells = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
             for c in nb["cells"] if c.get("cell_type") == "code"]
    return sha(*cells)


def keyed_values(cfg: Config) -> dict:
    """The parameters as keys see them: every section without the fields that never change a
    result (:data:`NOT_IN_STEP_KEY`). The step key and the driver's inputs key both start here."""
    values = cfg.to_dict()
    for section, keys in NOT_IN_STEP_KEY.items():
        for k in keys:
            values[section].pop(k, None)
    return values


def step_key(cfg: Config, step: Step, stages: Mapping[str, dict], schedule: list[Step], notebook: Path) -> str:
    """What decides whether a completed step can be skipped: its parameters, code and inputs.

    ``stages`` is the manifest's ``stages`` mapping (label -> entry with ``completion_id``).
    """
    values = keyed_values(cfg)
    relevant = {s: values[s] for s in STAGE_SECTIONS[step.stage]}
    relevant["seed"] = cfg.run.seed
    if "data" in relevant:
        if cfg.data.dataset_file:  # a dataset's code outside aresnb counts as parameters
            relevant["dataset_file_digest"] = dataset_registry.file_digest(cfg.data)
        else:  # unset, it leaves the key as it was before the field existed: finished runs stay reusable
            relevant["data"].pop("dataset_file", None)
    upstream = [stages.get(s.label, {}).get("completion_id", "missing") for s in upstream_of(step, schedule)]
    return sha(json.dumps(relevant, sort_keys=True, default=str), notebook_source_hash(notebook),
               step.label, *upstream)


def is_done_with_key(entry: Mapping[str, Any], key: str) -> bool:
    """A manifest entry that completed under ``key``."""
    return entry.get("status") == "done" and entry.get("key") == key


def reusable_summary(cfg: Config, paths: RunPaths, stage: str, round_index: int | None = None,
                     notebooks_dir: Path = NOTEBOOKS_DIR, arm: str | None = None) -> dict | None:
    """The stored summary of a step the run's manifest records done with the key it would have now.

    None when there is no manifest, the step is not done, or anything it depends on changed --
    the caller then computes. While the runner executes a step, the manifest marks it
    ``running``, so a stage the runner started always computes.
    """
    round_index = round_index if stage in ROUND_STAGES else None
    notebook = notebooks_dir / f"{stage}.ipynb"
    summary_file = paths.summary_file(stage, round_index, arm)
    if not (paths.manifest.exists() and notebook.exists() and summary_file.exists()):
        return None
    try:
        stages = read_json(paths.manifest).get("stages", {})
    except (OSError, ValueError):
        return None
    schedule = run_schedule(cfg)
    step = Step(stage, round_index, arm)
    if step not in schedule:
        return None
    if not is_done_with_key(stages.get(step.label, {}), step_key(cfg, step, stages, schedule, notebook)):
        return None
    return read_json(summary_file)
