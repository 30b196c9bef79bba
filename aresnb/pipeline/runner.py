"""`aresnb run`: execute the numbered notebooks with papermill, in order, resumably.

The schedule (``aresnb.stages.steps``) is 01, 02, then (03, 04, 05) once per ARES round, then 06, 07.
Each executed notebook lands in ``outputs/<run>/notebooks/``; ``manifest.json`` records the
resolved parameters and their hash, the git commit, package versions and each stage's status,
wall time, CPU time and processes (``run.num_processes`` for the heavy step of stages 02-06, else
1). A stage is skipped when it completed before with the same *key* (``aresnb.stages.steps.step_key``:
the parameters it reads, its notebook's code, the completions of the stages before it) -- so a
crashed run resumes where it stopped, and re-running an upstream stage re-runs what follows.

What the terminal shows (``output``): ``progress`` (the default) prints one ``[aresnb]`` line
as each step starts and ends and, between them, the stage's own progress lines
(``aresnb.progress``); ``verbose`` streams every cell's output through papermill's logger;
``quiet`` prints the ``[aresnb]`` lines only.

Before anything runs, a run is refused (``RunRefused``: nothing executed, no result written) when a
check of ``aresnb.pipeline.preflight`` fails (an unset API key variable, a missing path, ...), when a
selected stage needs an upstream stage that is neither selected nor done, or when another run
holds the run folder's lock (``aresnb.pipeline.runlock``). The lock is held until the run ends.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from aresnb.config import Config
from aresnb.errors import CLEAR_ERRORS
from aresnb.io import read_json, write_json
from aresnb.paths import STAGE_TITLES, STAGES, RunPaths
from aresnb.pipeline import preflight
from aresnb.pipeline.notebook_exec import execute_notebook
from aresnb.pipeline.notebook_html import export_html, trust_notebook
from aresnb.pipeline.runlock import RunFolderLocked, RunLock
from aresnb.stages.steps import (PROJECT_ROOT, Step, build_schedule, is_done_with_key, run_schedule, step_key,
                                 upstream_of)

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"  # tests point this at stand-in notebooks
OUTPUT_MODES = ("progress", "verbose", "quiet")
TRACKED_PACKAGES = (
    "aresnb", "torch", "transformers", "tokenizers", "peft", "trl", "datasets", "accelerate",
    "openai", "papermill", "numpy", "pandas",
)


class RunError(RuntimeError):
    """A run cannot start or a stage failed; the message says which and why."""


class RunRefused(RunError):
    """The run did not start: nothing was executed (at most the run folder and its lock file were created)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a step; the manifest marks it ``interrupted``. Its message names it."""


def notebook_of(step: Step) -> Path:
    """The committed notebook a step executes."""
    return NOTEBOOKS_DIR / f"{step.stage}.ipynb"


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


def parse_stage_selection(text: str | None) -> list[str]:
    """``'01,03-05'`` -> ['01_data', '03_teacher_scores', '04_ppo', '05_correction_sft']."""
    if not text:
        return list(STAGES)
    numbers = {s[:2]: s for s in STAGES}

    def number(token: str) -> int:
        token = token.strip()
        key = token[:2] if token[:2].isdigit() else token.zfill(2)
        if key not in numbers or (len(token) > 2 and token not in STAGES):
            raise RunError(f"--stages: unknown stage {token!r}; stages are {', '.join(STAGES)}")
        return int(key)

    chosen: set[int] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        if "-" in part:
            lo, hi = (number(t) for t in part.split("-", 1))
            if lo > hi:
                raise RunError(f"--stages: empty range {part!r}")
            chosen.update(range(lo, hi + 1))
        else:
            chosen.add(number(part))
    return [s for s in STAGES if int(s[:2]) in chosen]


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def _git_state() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """``manifest.json``: what ran, with which parameters, code and packages, and how it went."""

    def __init__(self, paths: RunPaths, cfg: Config):
        self.path = paths.manifest
        old = read_json(self.path) if self.path.exists() else {}
        self.data = {
            "run": cfg.run.name,
            "run_dir": str(paths.run_dir),
            "created": old.get("created", _now()),
            "updated": _now(),
            "params_hash": cfg.hash(),
            "params": cfg.to_dict(),
            "rounds": cfg.ares.rounds,
            "git": _git_state(),
            "packages": _package_versions(),
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
            "stages": old.get("stages", {}),
        }

    def stage(self, step: Step) -> dict:
        return self.data["stages"].get(step.label, {})

    def set_stage(self, step: Step, **fields) -> None:
        entry = self.data["stages"].setdefault(step.label, {})
        entry.update(stage=step.stage, round=step.round_index, **({"arm": step.arm} if step.arm else {}), **fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        write_json(self.path, self.data)


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------


def mirror_round_summary(paths: RunPaths, step: Step) -> None:
    """``<stage>/summary.json`` = the latest round's summary plus every round's under ``rounds``."""
    src = paths.summary_file(step.stage, step.round_index)
    if not src.exists():
        return
    dst = paths.summary_file(step.stage)
    rounds = read_json(dst).get("rounds", {}) if dst.exists() else {}
    latest = read_json(src)
    rounds[str(step.round_index)] = latest
    write_json(dst, {**latest, "latest_round": step.round_index, "rounds": rounds})


def stage_processes(paths: RunPaths, step: Step) -> int:
    """The processes the step's heavy step ran on, as its summary says (1: all in the kernel)."""
    summary = paths.summary_file(step.stage, step.round_index, step.arm)
    return int(read_json(summary).get("processes") or 1) if summary.exists() else 1


def _children_cpu_s() -> float:
    """CPU seconds of every finished child process (the kernels, and what they started and waited
    for): a stage's cost that other jobs on a shared machine do not inflate as they do wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _print(msg: str) -> None:
    print(f"[aresnb] {msg}", flush=True)


def _print_progress(line: str) -> None:
    print(f"    {line}", flush=True)


def _report_failure(step: Step, error: BaseException, out_nb: Path) -> str:
    """What the terminal and the manifest say about a failed step.

    An error whose message tells the whole story (``aresnb.errors.CLEAR_ERRORS``: a stage check,
    bad data, bad parameters) is one line; any other shows the failing cell and its error.
    """
    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    if ename in CLEAR_ERRORS:
        return f"stage {step.label} failed: {evalue}\nexecuted notebook: {out_nb}"
    lines = [f"stage {step.label} failed"]
    cell_source = None
    try:
        nb = json.loads(out_nb.read_text())
        for cell in nb["cells"]:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    cell_source = "".join(cell["source"])
    except (OSError, ValueError, KeyError):
        pass
    if cell_source:
        lines += ["--- failing cell ---", cell_source, "--------------------"]
    lines.append(f"{ename}: {evalue}")
    lines.append(f"executed notebook: {out_nb}")
    return "\n".join(lines)


def check_before_work(cfg: Config, selected: set[str]) -> None:
    """Refuse, listing every problem at once, what ``aresnb.pipeline.preflight`` finds for these stages."""
    found = preflight.problems(cfg, [s for s in STAGES if s in selected], NOTEBOOKS_DIR)
    if found:
        raise RunRefused("cannot start:\n" + "\n".join(f"  - {p}" for p in found))


def check_upstream(todo: list[Step], schedule: list[Step], selected: set[str], manifest: Manifest) -> None:
    """Every step's upstream is selected (it runs first) or done: a gap refuses before anything runs."""
    for step in todo:
        for up in upstream_of(step, schedule):
            if up.stage not in selected and manifest.stage(up).get("status") != "done":
                raise RunRefused(f"{step.label} needs {up.label}, which has not completed in this run: "
                                 f"run it first (e.g. --stages {up.stage[:2]}-{step.stage[:2]})")


def run_pipeline(cfg: Config, stages: list[str] | None = None, force: bool = False,
                 output: str = "progress") -> dict:
    """Run the selected stages of the schedule; return the manifest data. ``output``: see the module doc."""
    if output not in OUTPUT_MODES:
        raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
    selected = set(stages or STAGES)
    schedule = run_schedule(cfg)
    missing = [notebook_of(s) for s in schedule if s.stage in selected and not notebook_of(s).exists()]
    if missing:
        raise RunRefused("missing notebooks: " + ", ".join(str(m) for m in sorted(set(missing))))
    check_before_work(cfg, selected)

    paths = RunPaths(cfg)
    try:
        lock = RunLock(paths.lock_file).acquire()
    except RunFolderLocked as e:
        raise RunRefused(str(e)) from None
    try:
        return _run_locked(cfg, paths, schedule, selected, force, output)
    finally:
        lock.release()


def _run_locked(cfg: Config, paths: RunPaths, schedule: list[Step], selected: set[str], force: bool,
                output: str) -> dict:
    manifest = Manifest(paths, cfg)
    todo = [s for s in schedule if s.stage in selected]
    check_upstream(todo, schedule, selected, manifest)
    paths.notebooks_dir.mkdir(parents=True, exist_ok=True)
    paths.params_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    manifest.save()

    if cfg.run.cpu_threads:
        # Kernels inherit the environment. Tiny models on a shared CPU run many times faster on
        # one thread than with threads that spin against each other.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(cfg.run.cpu_threads)
    _print(f"run {cfg.run.name!r} -> {paths.run_dir} ({len(todo)} steps, params {cfg.hash()})")
    for i, step in enumerate(todo, 1):
        key = step_key(cfg, step, manifest.data["stages"], schedule, notebook_of(step))
        if not force and is_done_with_key(manifest.stage(step), key):
            _print(f"[{i}/{len(todo)}] {step.label}: done before with the same parameters and inputs, skipped")
            continue
        _print(f"[{i}/{len(todo)}] {step.label}: running {notebook_of(step).name} ({STAGE_TITLES[step.stage]})")
        wall = _execute_step(cfg, paths, manifest, step, key, output)
        _print(f"[{i}/{len(todo)}] {step.label}: done in {wall:.1f} s")
    total = sum(v.get("wall_time_s", 0) for v in manifest.data["stages"].values())
    _print(f"run {cfg.run.name!r} complete; stage wall time {total:.1f} s")
    return manifest.data


def _execute_step(cfg: Config, paths: RunPaths, manifest: Manifest, step: Step, key: str, output: str) -> float:
    """Execute one step's notebook, record how it went in the manifest; its wall time in seconds."""
    out_nb = paths.notebooks_dir / step.output_name
    kernel_log = out_nb.with_suffix(".kernel.log")
    progress_log = out_nb.with_suffix(".progress.log")
    manifest.set_stage(step, status="running", started=_now(), key=key, notebook=str(out_nb),
                       kernel_log=str(kernel_log))
    start, cpu_start = time.perf_counter(), _children_cpu_s()
    try:
        execute_notebook(notebook_of(step), out_nb, {"params": cfg.to_dict(), **step.notebook_parameters},
                         cwd=NOTEBOOKS_DIR, log_output=output == "verbose", kernel_log=kernel_log,
                         progress_file=progress_log if output != "verbose" else None,
                         echo=_print_progress if output == "progress" else None)
    except KeyboardInterrupt:
        manifest.set_stage(step, status="interrupted", wall_time_s=round(time.perf_counter() - start, 2),
                           error="interrupted (SIGINT)", finished=_now())
        raise RunInterrupted(step.label) from None
    except Exception as error:  # noqa: BLE001 - every notebook failure is recorded and reported
        message = _report_failure(step, error, out_nb)
        manifest.set_stage(step, status="failed", wall_time_s=round(time.perf_counter() - start, 2),
                           error=message, finished=_now())
        raise RunError(message) from None
    wall = time.perf_counter() - start
    if step.round_index is not None and step.arm is None:
        mirror_round_summary(paths, step)
    publish_notebook(out_nb, paths.executed_notebook_html(out_nb.name))
    manifest.set_stage(step, status="done", wall_time_s=round(wall, 2), finished=_now(),
                       completion_id=uuid.uuid4().hex[:12], error=None, processes=stage_processes(paths, step),
                       cpu_time_s=round(_children_cpu_s() - cpu_start, 2))
    return wall


def publish_notebook(executed: Path, html_page: Path) -> None:
    """Mark an executed notebook trusted and export it to an offline HTML page beside it."""
    try:
        trust_notebook(executed)
        export_html(executed, html_page)
    except Exception as error:  # noqa: BLE001 - a page we could not write never fails the stage
        _print(f"could not export {executed.name} to HTML: {type(error).__name__}: {error}")
