"""Start and stop the local Teacher server as a subprocess (``python -m aresnb.teacher.server``)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

_FAULT_FLAGS = {"rate_429": "429", "rate_500": "500", "rate_slow": "slow",
                "rate_malformed": "malformed", "rate_truncated": "truncated"}


class LocalServer:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path | None):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.base_url = f"http://127.0.0.1:{port}/v1"
        atexit.register(self.stop)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base_url + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        atexit.unregister(self.stop)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_local_server(
    dataset_dir: str | Path | None = None,
    backend: str = "reference",
    faults: Any = None,
    latency_ms: float | None = None,
    log_path: str | Path | None = None,
    ready_timeout_s: float = 300.0,
    extra_args: list[str] | None = None,
) -> LocalServer:
    """Start the server on a free port of 127.0.0.1 and wait until ``/v1/models`` answers.

    ``faults`` is a ``TeacherFaultsConfig`` (or None; its ``plan`` and ``reject_response_formats``
    are optional); ``latency_ms`` overrides its latency.
    """
    port_file = Path(tempfile.mkdtemp(prefix="aresnb-teacher-")) / "port"
    cmd = [sys.executable, "-m", "aresnb.teacher.server", "--port", "0", "--port-file", str(port_file),
           "--model", backend, "--exit-with-parent"]
    if dataset_dir is not None:
        cmd += ["--dataset-dir", str(dataset_dir)]
    if faults is not None:
        for field, name in _FAULT_FLAGS.items():
            cmd += [f"--fault-rate-{name}", str(getattr(faults, field))]
        cmd += ["--fault-seed", str(faults.seed), "--fault-slow-s", str(getattr(faults, "slow_s", 5.0))]
        for entry in getattr(faults, "plan", None) or []:
            cmd += ["--fault-at", str(entry)]
        for fmt in getattr(faults, "reject_response_formats", None) or []:
            cmd += ["--reject-response-format", fmt]
        latency_ms = faults.latency_ms if latency_ms is None else latency_ms
    cmd += ["--latency-ms", str(latency_ms or 0.0), *(extra_args or [])]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL)
    if log_path:
        log.close()
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text()[-2000:] if log_path else "(no log: pass log_path)"
            raise RuntimeError(f"the local Teacher server exited with code {proc.returncode}:\n{tail}")
        if port_file.exists():
            port = int(port_file.read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
                    if r.status == 200:
                        return LocalServer(proc, port, Path(log_path) if log_path else None)
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"the local Teacher server did not answer /v1/models within {ready_timeout_s} s")
