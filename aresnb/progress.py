"""Progress lines: what a stage says on the terminal while its notebook runs.

``aresnb run`` does not stream cell outputs (``--verbose`` does): a user watching it sees the
runner's ``[aresnb]`` lines and the lines stages send through :func:`say`. Under the runner a
kernel finds ``ARESNB_PROGRESS_FILE`` in its environment and appends each line there; the runner
tails that file (``aresnb.pipeline.notebook_exec``). Every line is also printed, so the executed notebook
keeps it and an interactive session shows it.

A long loop reports through :class:`Progress`: a tqdm bar when stdout is a terminal (a script
run by hand), else one line each ``every_percent`` of the way (a kernel's stdout is never a
terminal, so notebooks and the runner get lines, never frozen bars).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

PROGRESS_FILE_ENV = "ARESNB_PROGRESS_FILE"
DEFAULT_EVERY_PERCENT = 25
_every_percent = DEFAULT_EVERY_PERCENT


def configure(every_percent: int | None) -> None:
    """Set how often (in percent of a loop) :class:`Progress` reports; ``aresnb.stages.open_run`` calls it."""
    global _every_percent
    _every_percent = int(every_percent or DEFAULT_EVERY_PERCENT)


def say(message: str) -> None:
    """Print one progress line and hand it to the runner when a runner started this kernel."""
    print(message, flush=True)
    path = os.environ.get(PROGRESS_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(message.replace("\n", " ").rstrip() + "\n")


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A counted loop's progress: ``update(n, **shown)`` after each item, ``close()`` at the end.

    On a terminal: tqdm. Elsewhere: ``"<desc>: 38/150 (25%) loss 1.234"`` each time the count
    crosses another ``every_percent`` (the last item always reports), through :func:`say`.
    ``enabled=False`` is silent (e.g. every process but the main one).
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "", enabled: bool = True,
                 every_percent: int | None = None, emit: Callable[[str], None] = say):
        self.total, self.desc, self.count, self.unit = max(int(total), 0), desc, int(initial), unit
        self.enabled = enabled and self.total > 0
        self.every = max(1, min(100, int(every_percent or _every_percent)))
        self.emit = emit
        self.shown: dict[str, str] = {}
        self._next = self._threshold_after(self.count)
        self._bar: Optional[object] = None
        if self.enabled and _stdout_is_terminal():
            from tqdm import tqdm  # deferred: only a terminal gets a bar

            self._bar = tqdm(total=self.total, initial=self.count, desc=desc, unit=unit or "it", leave=True)

    def _threshold_after(self, count: int) -> int:
        """The smallest count past ``count`` that reaches the next multiple of ``every`` percent."""
        step = self.total * self.every / 100
        k = int(count // step) + 1 if step else 1
        return min(self.total, max(count + 1, int(-(-k * step // 1))))

    def line(self) -> str:
        shown = " ".join(f"{k} {v}" for k, v in self.shown.items())
        unit = f" {self.unit}" if self.unit else ""
        pct = 100 * self.count / self.total if self.total else 100
        return f"{self.desc}: {self.count}/{self.total}{unit} ({pct:.0f}%)" + (f" {shown}" if shown else "")

    def update(self, n: int = 1, **shown: object) -> None:
        if not self.enabled:
            return
        self.count = min(self.total, self.count + n)
        self.shown.update({k: (f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in shown.items()})
        if self._bar is not None:
            self._bar.update(n)
            if shown:
                self._bar.set_postfix(self.shown, refresh=False)
            return
        if self.count >= self._next:
            self.emit(self.line())
            self._next = self._threshold_after(self.count) if self.count < self.total else self.total + 1

    def callback(self) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback (the Teacher client's) that moves this progress to ``done``."""
        def moved(done: int, total: int) -> None:
            if done > self.count:
                self.update(done - self.count)
        return moved

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
