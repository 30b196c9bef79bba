"""A run's results as the figures read them: :func:`read_run` reads the files once, into a frozen
:class:`RunResults`; every figure builder in :mod:`aresnb.plots` is a function of it and knows no
run folder.

What is not there yet (a stage that has not run) is simply absent: ``summary`` gives ``{}``, the
mappings lack the key, and a figure without data returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import pandas as pd

from aresnb.io import read_json, read_jsonl
from aresnb.paths import BASELINE, CORRECTION_SFT, EVALUATION, PPO, ROUND_STAGES, STAGES, RunPaths

StepKey = tuple[str, "int | None"]  # (stage, round index; None: a stage without rounds, or the latest round's mirror)


@dataclass(frozen=True)
class RunResults:
    rounds: int
    summaries: Mapping[StepKey, Mapping[str, Any]]
    tables: Mapping[str, pd.DataFrame]  # stage 07's tables by name (its summary's "tables")
    metrics: Mapping[StepKey, tuple[Mapping[str, Any], ...]]  # the trainers' rows, one per optimizer step
    ppo_eval: Mapping[tuple[int, str], tuple[Mapping[str, Any], ...]]  # (round, "before"|"after") -> scored val rows
    samples: Mapping[int, pd.DataFrame]  # round -> stage 03's samples (columns scores, dropped)

    def summary(self, stage: str, round_index: int | None = None) -> Mapping[str, Any]:
        """A stage's summary ({} when it has not run); a round stage without a round: the latest round's."""
        return self.summaries.get((stage, round_index), {})


def _json_or_none(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def _evaluation_tables(paths: RunPaths, summary07: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The tables stage 07 lists, read from this run folder (the summary's paths may be another machine's)."""
    out = {}
    for name, files in (summary07.get("tables") or {}).items():
        csv = paths.tables_dir / Path(files["csv"]).name if isinstance(files, Mapping) and files.get("csv") else None
        if csv is not None and csv.exists():
            out[name] = pd.read_csv(csv)
    return out


def read_run(paths: RunPaths, rounds: int) -> RunResults:
    """Everything the figures show of the run at ``paths`` with ``rounds`` ARES rounds, read now."""
    summaries: dict[StepKey, Mapping[str, Any]] = {}
    for stage in STAGES:
        for i in [None, *range(1, rounds + 1)] if stage in ROUND_STAGES else [None]:
            if (found := _json_or_none(paths.summary_file(stage, i))) is not None:
                summaries[(stage, i)] = MappingProxyType(found)
    metrics: dict[StepKey, tuple] = {}
    for key in [(BASELINE, None), *[(s, i) for s in (PPO, CORRECTION_SFT) for i in range(1, rounds + 1)]]:
        if (file := paths.metrics_file(*key)).exists():
            metrics[key] = tuple(read_jsonl(file))
    ppo_eval = {(i, when): tuple(found.get("rows", []))
                for i in range(1, rounds + 1) for when in ("before", "after")
                if (found := _json_or_none(paths.ppo_eval_file(i, when))) is not None}
    samples = {i: pd.read_parquet(paths.samples_file(i), columns=["scores", "dropped"])
               for i in range(1, rounds + 1) if paths.samples_file(i).exists()}
    return RunResults(rounds=rounds, summaries=MappingProxyType(summaries),
                      tables=MappingProxyType(_evaluation_tables(paths, summaries.get((EVALUATION, None), {}))),
                      metrics=MappingProxyType(metrics), ppo_eval=MappingProxyType(ppo_eval),
                      samples=MappingProxyType(samples))
