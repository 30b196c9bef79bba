"""One checkpoint scheme for every trainer: the supervised trainer (baseline, SFT on corrections,
LoRA answer heads) and PPO.

A trainer writing under ``out_dir`` keeps ``out_dir/checkpoints/step_<N>/``: accelerate's
``save_state`` (models, optimizer, scheduler, RNG states) plus ``trainer_state.json``, written
last, with the step and the run's *fingerprint*. A folder without ``trainer_state.json`` is an
interrupted save and is ignored. On start a trainer resumes from the newest complete checkpoint
whose fingerprint equals its own; checkpoints of another fingerprint (other parameters, other
data) are logged and discarded, never resumed. The newest ``keep`` checkpoints stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from aresnb.io import read_jsonl, write_json, write_jsonl

STATE_FILE = "trainer_state.json"
PREFIX = "step_"


def fingerprint(*parts: Any) -> str:
    """The one way a resumable artefact is identified: a short hash of JSON-able parts."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dir_signature(path: str | Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of the files of a saved model: changes whenever it is saved again."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())


class Checkpoints:
    """The checkpoints of one training run: ``root`` = ``out_dir/checkpoints``."""

    def __init__(self, root: str | Path, fingerprint: str, keep: int = 1, log: Callable[[str], None] = print):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root, self.fingerprint, self.keep, self.log = Path(root), fingerprint, keep, log

    def _complete(self) -> list[tuple[int, Path, dict]]:
        found = []
        for d in self.root.glob(PREFIX + "*"):
            state_file = d / STATE_FILE
            if state_file.exists():
                state = json.loads(state_file.read_text())
                found.append((int(state["step"]), d, state))
        return sorted(found, key=lambda x: x[0])

    def latest(self) -> tuple[Path, dict] | None:
        """The newest complete checkpoint of this fingerprint; others are logged and discarded.

        Call it on the main process before the others look (or on every process after a barrier
        when the folder is shared): it deletes checkpoints that belong to another run.
        """
        complete = self._complete()
        mine = [c for c in complete if c[2].get("fingerprint") == self.fingerprint]
        other = [c for c in complete if c[2].get("fingerprint") != self.fingerprint]
        if other:
            self.log(f"discarding {len(other)} checkpoint(s) in {self.root}: they belong to a run with other "
                     f"parameters or data (fingerprint {other[-1][2].get('fingerprint')} != {self.fingerprint})")
            for _, d, _ in other:
                shutil.rmtree(d, ignore_errors=True)
        if not mine:
            return None
        _, d, state = mine[-1]
        return d, state

    def resume(self, accelerator: Any, metrics_file: str | Path | None = None,
               step_key: str = "step") -> tuple[int, dict | None]:
        """Load the newest matching checkpoint into the accelerator's prepared objects.

        Returns (step, its saved state), or (0, None) for a fresh start. The trainer's metrics
        file keeps only the rows up to the resumed step (later ones are redone); a fresh start
        removes it (its rows belong to an older run).
        """
        found = self.latest() if accelerator.is_main_process else None
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            found = self.latest()
        step, state = 0, None
        if found is not None:
            path, state = found
            accelerator.load_state(str(path))
            step = int(state["step"])
            self.log(f"resumed from {path} (step {step})")
        if metrics_file is not None and accelerator.is_main_process:
            metrics_file = Path(metrics_file)
            if found is None:
                metrics_file.unlink(missing_ok=True)
            else:
                write_jsonl(metrics_file, [r for r in read_jsonl(metrics_file) if r.get(step_key, 0) <= step])
        accelerator.wait_for_everyone()
        return step, state

    def save(self, accelerator: Any, step: int, **state: Any) -> Path:
        """``save_state`` then ``trainer_state.json`` (step, fingerprint, ``state``); prune to ``keep``."""
        target = self.root / f"{PREFIX}{step:06d}"
        accelerator.wait_for_everyone()
        # T5 ties its embeddings; accelerate warns that it drops the duplicates, which is what we
        # want (load_state re-ties them: the resume tests check the weights bit for bit).
        noisy = logging.getLogger("accelerate.utils.other")
        level = noisy.level
        noisy.setLevel(logging.ERROR)
        try:
            accelerator.save_state(str(target))
        finally:
            noisy.setLevel(level)
        if accelerator.is_main_process:
            write_json(target / STATE_FILE, {"step": step, "fingerprint": self.fingerprint, **state})
            for _, old, _ in self._complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return target

    def discard_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
