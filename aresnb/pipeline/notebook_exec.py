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
- the kernel's own stderr (tracebacks of a dying kernel) goes to a log file beside the executed
  notebook instead of the terminal. Cell outputs are unaffected: they travel through the notebook
  (and papermill's logger when ``log_output``);
- the kernel talks to us over IPC (Unix sockets in a private temporary folder), not TCP: nothing
  listens on a port, and ipykernel has no "running over TCP without encryption" to warn about;
- ``progress_file``: the kernel gets ``ARESNB_PROGRESS_FILE`` (see ``aresnb.progress``) and each
  line it appends there is handed to ``echo`` as it arrives, while the notebook runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from aresnb.progress import PROGRESS_FILE_ENV


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


def ipc_kernel_manager(socket_dir: Path) -> type:
    """A jupyter_client kernel manager whose kernels listen on Unix sockets under ``socket_dir``."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return str(socket_dir / "kernel")

    return IPCKernelManager


class _LineTail:
    """Complete lines appended to a file since the last :meth:`read` (a partial line waits)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.rest = path, 0, ""

    def read(self) -> list[str]:
        try:
            with open(self.path, "r", encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        *lines, self.rest = (self.rest + chunk).split("\n")
        return lines


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (or, for None, unset) environment variables the kernel inherits; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any], *, cwd: Path, log_output: bool,
                     kernel_log: Path, progress_file: Path | None = None, echo: Callable[[str], None] | None = None,
                     grace_s: float = 10.0) -> None:
    """papermill.execute_notebook(...) that raises KeyboardInterrupt, and leaves no kernel behind,
    when interrupted; any other error of the notebook is re-raised as papermill raised it."""
    import papermill

    outcome: dict[str, BaseException] = {}
    socket_dir = Path(tempfile.mkdtemp(prefix="aresnb-kernel-"))  # short: a socket path has ~100 bytes
    tail = None
    if progress_file is not None:
        progress_file.parent.mkdir(parents=True, exist_ok=True)
        progress_file.write_text("")
        tail = _LineTail(progress_file)

    def work() -> None:
        try:
            papermill.execute_notebook(
                str(notebook), str(output), parameters=parameters, kernel_name="python3", cwd=str(cwd),
                progress_bar=False, log_output=log_output, stdout_file=None, stderr_file=None,
                kernel_manager_class=ipc_kernel_manager(socket_dir))
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error

    def drain() -> None:
        if tail is not None and echo is not None:
            for line in tail.read():
                echo(line)

    known = kernel_pids()
    try:
        with stderr_to(kernel_log), _environment(**{PROGRESS_FILE_ENV: str(progress_file) if progress_file else None}):
            worker = threading.Thread(target=work, name=f"papermill {notebook.name}", daemon=True)
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.2)
                    drain()
            except KeyboardInterrupt:
                _stop(worker, known, grace_s)
                raise
            drain()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    if "error" in outcome:
        raise outcome["error"]
