"""Experiment tracking: the trainers' metrics rows, also sent to accelerate's trackers.

``run.log_with`` names the trackers (``tensorboard``, ``wandb``, ``mlflow``, ``trackio``); each
trainer (:func:`aresnb.sft.trainer.train_seq2seq`, :func:`aresnb.rl.ppo.train_ppo`) builds its
``Accelerator`` with :meth:`Tracking.accelerator_kwargs`, calls :meth:`Tracking.start` once
prepared and ``accelerator.log(row, step=...)`` with every row it appends to ``metrics.jsonl``,
then :meth:`Tracking.end`. With no tracker every call is a no-op. TensorBoard writes event files
under ``<project_dir>/<name>/``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# Each tracker and the packages accelerate accepts for it (any one will do).
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                    "trackio": ("trackio",)}


def missing_trackers(log_with: Iterable[str]) -> list[str]:
    """The trackers named in ``log_with`` whose package is not installed here."""
    return [name for name in log_with
            if not any(importlib.util.find_spec(pkg) is not None for pkg in TRACKER_PACKAGES.get(name, (name,)))]


def flat_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as one level of scalars (TensorBoard's hparams accept no lists or None)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{key}/"))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


@dataclass(frozen=True)
class Tracking:
    """Which trackers a trainer logs to, where, under which run name, with which hyperparameters."""

    log_with: tuple[str, ...] = ()
    project_dir: str | None = None
    name: str = "aresnb"
    config: Mapping[str, Any] = field(default_factory=dict)

    def accelerator_kwargs(self) -> dict[str, Any]:
        if not self.log_with:
            return {}
        return {"log_with": list(self.log_with), "project_dir": self.project_dir}

    def start(self, accelerator: Any) -> None:
        if self.log_with:
            accelerator.init_trackers(self.name, config=flat_config(self.config))

    def end(self, accelerator: Any) -> None:
        # Not accelerator.end_training(): it also destroys the process group, which the trainer's
        # closing barrier and the next training in the same launched process (stage 06's heads)
        # still need. aresnb.stages.launch tears the group down once, when the step is done.
        for tracker in accelerator.trackers:
            tracker.finish()


NO_TRACKING = Tracking()
