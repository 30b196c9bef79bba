"""What can be checked before any work starts, given the stages a run will execute.

``load_config`` checks the parameters themselves (types, ranges, rules across keys). This module
checks them against *this machine*: the API key variables of every endpoint a selected stage will
call, the paths that must exist, the process count that batch sizes must divide, and that the
experiment trackers of ``run.log_with`` are installed. ``aresnb
params FILE`` prints the problems; ``aresnb run`` refuses to start while there are any, so an
unset key is reported before hours of training and sampling, not after.

Endpoints: stages 03, 04 and 05 call the Teacher; stage 07 calls the judge, which is the Teacher
unless ``evaluation.judge`` names its own ``base_url`` / ``api_key_env``: the endpoint records of
``aresnb.teacher.endpoints``. A local backend (``teacher.serve_local``) needs no key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from aresnb.config import Config
from aresnb.data import registry as dataset_registry
from aresnb.data.registry import Dataset
from aresnb.data.schema import DataError
from aresnb.model.tracking import missing_trackers
from aresnb.paths import ANSWER_LORA, BASELINE, CORRECTION_SFT, DATA, EVALUATION, PPO, TEACHER_SCORES
from aresnb.teacher.endpoints import Endpoint, endpoint
from aresnb.teacher.facade import cache_path

TEACHER_STAGES = (TEACHER_SCORES, PPO, CORRECTION_SFT)
JUDGE_STAGES = (EVALUATION,)


@dataclass(frozen=True)
class Call:
    """An endpoint some selected stages call."""

    endpoint: Endpoint
    stages: tuple[str, ...]

    @property
    def key_env(self) -> str | None:
        """The variable that must hold the key; None: no key needed (a local backend)."""
        return None if self.endpoint.backend.local else self.endpoint.api_key_env

    def describe(self) -> str:
        role = {"teacher": "Teacher"}.get(self.endpoint.role, self.endpoint.role)
        where = "the local server" if self.endpoint.backend.local else self.endpoint.base_url
        return f"the {role} at {where} (stage{'s' if len(self.stages) > 1 else ''} {', '.join(s[:2] for s in self.stages)})"


def endpoints(cfg: Config, stages: Iterable[str]) -> list[Call]:
    """The endpoints the selected stages will call, with the key variable each needs."""
    stages = set(stages)
    out = []
    for role, role_stages in (("teacher", TEACHER_STAGES), ("judge", JUDGE_STAGES)):
        selected = tuple(s for s in role_stages if s in stages)
        if selected:
            out.append(Call(endpoint(cfg, role), selected))
    return out


def key_problems(cfg: Config, stages: Iterable[str], environ: os._Environ | dict | None = None) -> list[str]:
    """One line per unset key variable, naming every endpoint that needs it (never a key's value)."""
    environ = os.environ if environ is None else environ
    needing: dict[str, list[Call]] = {}
    for call in endpoints(cfg, stages):
        if call.key_env and not environ.get(call.key_env):
            needing.setdefault(call.key_env, []).append(call)
    return [f"the environment variable {var} is not set; {' and '.join(c.describe() for c in calls)} "
            f"need{'s' if len(calls) == 1 else ''} the API key it holds: export {var}=..."
            for var, calls in needing.items()]


def _looks_local(value: str | None) -> bool:
    """A model/tokenizer value that is a local path rather than a hub id."""
    return bool(value) and (value.startswith(("/", "./", "../", "~")) or value.endswith(".gguf"))


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _dataset_or_none(d: Any) -> Dataset | None:
    """The data section's record; None when its file is missing (reported as a missing path)."""
    try:
        return dataset_registry.dataset(d)
    except DataError:
        return None


def path_problems(cfg: Config, stages: Iterable[str], base_dir: Path) -> list[str]:
    """Paths the selected stages read that do not exist. Relative paths are resolved from
    ``base_dir``: the folder the stage notebooks run in."""
    stages = set(stages)
    wanted: list[tuple[str, str | None, str]] = []  # (key, value, "dir" | "file" | "any")
    d = cfg.data
    if DATA in stages:
        if d.dataset_file:
            wanted.append(("data.dataset_file", d.dataset_file, "file"))
        record = _dataset_or_none(d)
        if record is not None and not record.generated and d.path:
            wanted.append(("data.path", d.path, "dir"))
            wanted += [(f"data.{key}", getattr(d, key), "dir") for key in record.local_dirs]
        if _looks_local(cfg.features.model):
            wanted.append(("features.model", cfg.features.model, "any"))
        # MM-CoT's files (always local paths when given)
        wanted += [(f"data.{key}", getattr(d, key), "file") for key in ("features_file", "name_map", "captions_file")
                   if getattr(d, key)]
    if BASELINE in stages:
        if cfg.model.init_from:
            wanted.append(("model.init_from", cfg.model.init_from, "dir"))
        for key in ("base", "tokenizer"):
            if _looks_local(getattr(cfg.model, key)):
                wanted.append((f"model.{key}", getattr(cfg.model, key), "any"))
    calls_teacher = stages & set(TEACHER_STAGES + JUDGE_STAGES)
    if calls_teacher:
        if cfg.teacher.cassette:
            wanted.append(("teacher.cassette", cfg.teacher.cassette, "file"))
        teacher = endpoint(cfg, "teacher")
        if teacher.backend.local and not teacher.replay_only and _looks_local(teacher.local_backend):
            wanted.append(("teacher.local_backend", cfg.teacher.local_backend, "any"))
    if EVALUATION in stages and _looks_local(cfg.evaluation.similarity_model):
        wanted.append(("evaluation.similarity_model", cfg.evaluation.similarity_model, "any"))

    problems = []
    for key, value, kind in wanted:
        if value is None:
            problems.append(f"{key} is not set (data.source={d.source!r} needs it)")
            continue
        path = _resolve(value, base_dir)
        ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists()
        if not ok:
            what = {"dir": "directory", "file": "file", "any": "path"}[kind]
            relative = "" if Path(value).expanduser().is_absolute() else f" (a relative path is read from {base_dir})"
            problems.append(f"{key}: {what} not found: {path}{relative}")
    if calls_teacher and cfg.teacher.replay_only and not cfg.teacher.cassette:
        if not cache_path(cfg).exists():
            problems.append(f"teacher.replay_only is set, but there is no reply cache at {cache_path(cfg)} and no "
                            "teacher.cassette: every Teacher request would miss")
    return problems


def process_count(environ: os._Environ | dict | None = None) -> int | None:
    """Processes a launcher (``accelerate launch``, torchrun) runs, when one set WORLD_SIZE."""
    value = (os.environ if environ is None else environ).get("WORLD_SIZE")
    return int(value) if value and value.isdigit() and int(value) > 0 else None


LAUNCHING_STAGES = (BASELINE, TEACHER_SCORES, PPO, CORRECTION_SFT, ANSWER_LORA)


def process_problems(cfg: Config, stages: Iterable[str], environ: os._Environ | dict | None = None,
                     base_dir: Path | None = None) -> list[str]:
    """The processes the heavy steps run on (``run.num_processes``, or a launcher's WORLD_SIZE).

    PPO splits each optimizer step's sequences across processes: an equal share each. Without an
    accelerate config, N processes on a GPU machine need N GPUs (one each).
    """
    stages = set(stages)
    out = []
    launching = cfg.run.num_processes > 1 and bool(stages & set(LAUNCHING_STAGES))
    n, source = (cfg.run.num_processes, "run.num_processes") if cfg.run.num_processes > 1 else \
        (process_count(environ), "WORLD_SIZE")
    if n is not None and n > 1 and PPO in stages:
        out += [f"ppo.{key} ({getattr(cfg.ppo, key)}) is not divisible by the {n} processes ({source}={n})"
                for key in ("batch_size",) if getattr(cfg.ppo, key) % n]
    if launching and cfg.run.accelerate_config:
        path = _resolve(cfg.run.accelerate_config, base_dir or Path.cwd())
        if not path.is_file():
            out.append(f"run.accelerate_config: file not found: {path}")
    elif launching and 0 < (gpus := _cuda_devices()) < cfg.run.num_processes:
        out.append(f"run.num_processes={cfg.run.num_processes} but this machine has {gpus} GPU(s): "
                   "one process per GPU (or give run.accelerate_config)")
    return out


def _cuda_devices() -> int:
    import torch  # deferred: `aresnb params` stays light when nothing launches

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


TRAINING_STAGES = (BASELINE, PPO, CORRECTION_SFT, ANSWER_LORA)


def tracker_problems(cfg: Config, stages: Iterable[str]) -> list[str]:
    """Every tracker of ``run.log_with`` must be installed when a selected stage trains."""
    if not set(stages) & set(TRAINING_STAGES):
        return []
    return [f"run.log_with names {name}, which is not installed here (pip install {name}, or remove it)"
            for name in missing_trackers(cfg.run.log_with)]


def problems(cfg: Config, stages: Iterable[str], base_dir: Path, environ: os._Environ | dict | None = None) -> list[str]:
    """Every problem found before work starts; empty when the run may start."""
    stages = list(stages)
    return [*key_problems(cfg, stages, environ), *path_problems(cfg, stages, base_dir),
            *process_problems(cfg, stages, environ, base_dir), *tracker_problems(cfg, stages)]
