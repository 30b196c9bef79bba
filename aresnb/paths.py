"""Where a run keeps what it writes: the one place that knows the layout of ``outputs/<run>/``.

Data flows one way, stage by stage; each stage reads what earlier stages wrote and writes its
own folder. Stages 03-05 repeat once per ARES round and write under ``round_<i>/``; the runner
mirrors the latest round's ``summary.json`` into ``<stage>/summary.json``.

    outputs/<run>/
      manifest.json  params.yaml  run.lock (held while a run writes)  notebooks/  tables/  figures/
      01_data/        dataset/ (DatasetDict)  features/<split>.npy  summary.json
      02_baseline/    model/ (save_pretrained + tokenizer)  checkpoints/  metrics.jsonl
                      rationales_val.jsonl  rationales_test.jsonl  summary.json
      round_<i>/03_teacher_scores/  samples.parquet  summary.json
      round_<i>/04_ppo/             policy/  value/  checkpoints/  metrics.jsonl  summary.json
      round_<i>/05_correction_sft/  corrections.parquet  model/  rationales_{val,test}.jsonl  summary.json
      06_answer_lora/ <model_name>/<format>/adapter/  predictions_test.jsonl  summary.json
      07_evaluation/  summary.json
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

STAGES = (
    "01_data",
    "02_baseline",
    "03_teacher_scores",
    "04_ppo",
    "05_correction_sft",
    "06_answer_lora",
    "07_evaluation",
)
ROUND_STAGES = ("03_teacher_scores", "04_ppo", "05_correction_sft")


class RunPaths:
    """Paths of one run. ``RunPaths(cfg)`` or ``RunPaths.from_dir(path)``."""

    def __init__(self, cfg: Any = None, run_dir: str | Path | None = None):
        if run_dir is None:
            run_dir = cfg.run_dir()
        self.run_dir = Path(run_dir)
        self.cfg = cfg

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> "RunPaths":
        return cls(run_dir=run_dir)

    # ---- top level -----------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.json"

    @property
    def lock_file(self) -> Path:
        """flock-ed by ``aresnb run`` while it writes this folder (aresnb.runlock)."""
        return self.run_dir / "run.lock"

    @property
    def params_file(self) -> Path:
        return self.run_dir / "params.yaml"

    @property
    def notebooks_dir(self) -> Path:
        return self.run_dir / "notebooks"

    @property
    def tables_dir(self) -> Path:
        return _mk(self.run_dir / "tables")

    @property
    def figures_dir(self) -> Path:
        return _mk(self.run_dir / "figures")

    def stage_dir(self, stage: str, round_index: int | None = None) -> Path:
        """The folder a stage writes (created); round stages need ``round_index`` (1-based)."""
        return _mk(self.stage_path(stage, round_index))

    def stage_path(self, stage: str, round_index: int | None = None) -> Path:
        """Like :meth:`stage_dir`, without creating it: for reading and existence checks."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        if stage in ROUND_STAGES:
            if round_index is None or round_index < 1:
                raise ValueError(f"stage {stage} runs once per round: give round_index >= 1")
            return self.run_dir / f"round_{round_index}" / stage
        return self.run_dir / stage

    # ---- stage 01 ------------------------------------------------------------------------
    @property
    def dataset_dir(self) -> Path:
        return self.run_dir / "01_data" / "dataset"

    def features_file(self, split: str) -> Path:
        return self.run_dir / "01_data" / "features" / f"{split}.npy"

    # ---- models along the pipeline -------------------------------------------------------
    @property
    def baseline_model_dir(self) -> Path:
        return self.run_dir / "02_baseline" / "model"

    def rationales_file(self, model_name: str, split: str) -> Path:
        """Greedy rationales (JSONL, one row per qid) of ``baseline`` or ``round_<i>``."""
        if model_name == "baseline":
            return self.run_dir / "02_baseline" / f"rationales_{split}.jsonl"
        return self.run_dir / model_name / "05_correction_sft" / f"rationales_{split}.jsonl"

    def samples_file(self, round_index: int) -> Path:
        return self.stage_path("03_teacher_scores", round_index) / "samples.parquet"

    def ppo_policy_dir(self, round_index: int) -> Path:
        return self.stage_path("04_ppo", round_index) / "policy"

    def sft_model_dir(self, round_index: int) -> Path:
        return self.stage_path("05_correction_sft", round_index) / "model"

    def policy_entering_round(self, round_index: int) -> Path:
        """Round 1 starts from the baseline; round i > 1 from round i-1's corrected SFT model."""
        return self.baseline_model_dir if round_index == 1 else self.sft_model_dir(round_index - 1)

    def ares_model_dir(self, rounds: int) -> Path:
        """The final ARES model: the last round's corrected SFT model."""
        return self.sft_model_dir(rounds)

    def answer_dir(self, model_name: str, fmt: str) -> Path:
        return _mk(self.run_dir / "06_answer_lora" / model_name / fmt)

    @property
    def teacher_dir(self) -> Path:
        return _mk(self.run_dir / "teacher")


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- small I/O helpers every stage uses ----------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """numpy / torch scalars and Paths -> plain JSON; NaN/inf -> None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_summary(stage_dir: str | Path, summary: dict) -> Path:
    """A stage's machine-readable results: ``<stage_dir>/summary.json``."""
    return write_json(Path(stage_dir) / "summary.json", summary)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row and flush: metrics and replies survive a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(_jsonable(row)) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(_jsonable(row)) + "\n")
    os.replace(tmp, path)
    return path
