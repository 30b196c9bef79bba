"""Execute one stage notebook with papermill so that Ctrl-C stops it cleanly.

Left to itself, papermill's executor (nbclient) takes over SIGINT while a notebook runs: it shuts
the kernel down behind the cell's back, the dying kernel prints ZMQ tracebacks to the terminal it
inherited, and a Ctrl-C that lands at the wrong moment is swallowed and the run goes on. So:

- papermill runs in a worker thread; signal handlers can only be installed from the main
  thread, so nbclient installs none and SIGINT stays a plain ``KeyboardInterrupt`` here;
- on Ctrl-C the kernel's process group (the kernel and what it started, e.g. the local Teacher
  server) gets SIGINT, as a Jupyter "interrupt" would: the cell stops with ``KeyboardInterrupt``
  and the executed notebook records where. A kernel still running after ``grace_s``, or a second
  Ctrl-C, gets SIGKILL; everything the stages write survives a kill (they resume);
- the kernel's own stderr (its start-up warnings, tracebacks of a dying kernel) goes to a log
  file beside the executed notebook instead of the terminal. Cell outputs are unaffected: they
  travel through the notebook and papermill's logger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator


def kernel_pids() -> set[int]:
    """PIDs of this process's Jupyter kernels (children running ipykernel), from /proc."""
    me, found = os.getpid(), set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == me and b"ipykernel" in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _signal_group(pid: int, sig: int) -> None:
    """Signal the kernel's process group (jupyter_client starts each kernel in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), sig)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Point file descriptor 2 at ``path`` (append): child processes started inside inherit it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _stop(worker: threading.Thread, known: set[int], grace_s: float) -> None:
    """Interrupt the kernels started since ``known``; kill what is still running after ``grace_s``."""
    interrupted: set[int] = set()
    deadline = time.monotonic() + grace_s
    try:
        while worker.is_alive() and time.monotonic() < deadline:
            for pid in kernel_pids() - known - interrupted:  # a kernel may still be starting
                _signal_group(pid, signal.SIGINT)
                interrupted.add(pid)
            worker.join(0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        pass
    for pid in (kernel_pids() - known) | interrupted:
        _signal_group(pid, signal.SIGKILL)
    worker.join(10)


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any], *, cwd: Path, log_output: bool,
                     kernel_log: Path, grace_s: float = 10.0) -> None:
    """papermill.execute_notebook(...) that raises KeyboardInterrupt, and leaves no kernel behind,
    when interrupted; any other error of the notebook is re-raised as papermill raised it."""
    import papermill

    outcome: dict[str, BaseException] = {}

    def work() -> None:
        try:
            papermill.execute_notebook(
                str(notebook), str(output), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                progress_bar=False, log_output=log_output, stdout_file=None, stderr_file=None)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error

    known = kernel_pids()
    with stderr_to(kernel_log):
        worker = threading.Thread(target=work, name=f"papermill {notebook.name}", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except KeyboardInterrupt:
            _stop(worker, known, grace_s)
            raise
    if "error" in outcome:
        raise outcome["error"]
