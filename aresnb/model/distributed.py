"""Processes and devices: the Accelerator every trainer runs under, and ``accelerate launch``.

One process (``run.num_processes: 1``) runs a stage's heavy step in the notebook's kernel. More
than one: the stage starts ``accelerate launch --num_processes N ... -m <entry> ...`` itself
(:mod:`aresnb.stages.launch`), streams its output into the cell and reads the results back from
disk. The launched processes find each other through ``torch.distributed``: NCCL on GPUs, gloo on
a CPU-only machine (``--multi_gpu`` goes through ``torch.distributed.run`` either way; accelerate's
``--cpu`` multi-process mode needs MPI). ``ARESNB_LAUNCHED`` marks a launched process, so a stage
never launches from inside a launch.

Mixed precision (``run.mixed_precision``) is accelerate's autocast for training; generation runs
under the same autocast (:func:`autocast`), the weights stay float32.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections import deque
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs

from aresnb.model.tracking import NO_TRACKING, Tracking

LAUNCHED_ENV = "ARESNB_LAUNCHED"


class LaunchFailed(RuntimeError):
    """A launched step exited with an error; the message holds the command and its last output."""


def make_accelerator(mixed_precision: str = "no", cpu: bool | None = None, tracking: Tracking = NO_TRACKING) -> Accelerator:
    """The Accelerator every trainer runs under (DDP may see parameters without gradients).

    ``cpu=None`` picks the CPU when there is no CUDA device: accelerate then joins the launched
    processes over gloo (without it, CPU-only processes would each run alone). ``tracking``: the
    trackers every metrics row also goes to (the trainer starts and ends them).
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                       **tracking.accelerator_kwargs())


def launched() -> bool:
    """True inside a process that a stage started with ``accelerate launch``."""
    return os.environ.get(LAUNCHED_ENV) == "1"


def process_rank() -> tuple[int, int]:
    """(this process's index, the number of processes) of the current launch; (0, 1) without one."""
    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes


def default_device() -> torch.device:
    """Where this process computes: its GPU under a launch, the first GPU, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return PartialState().device


def autocast(mixed_precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """torch.autocast for ``run.mixed_precision`` ('no': nothing), as accelerate applies it in training."""
    device = torch.device(device)
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def shard(items: Sequence[Any], rank: int, num_processes: int) -> list[Any]:
    """This process's share of ``items``: every ``num_processes``-th one from ``rank`` (balanced
    for length-sorted work, since neighbours have similar cost)."""
    return list(items[rank::num_processes])


def free_port() -> int:
    """A TCP port nothing listens on now: the launch's rendezvous (two launches never share one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(module: str, args: Sequence[str], num_processes: int, mixed_precision: str = "no",
                       config_file: str | None = None) -> list[str]:
    """``accelerate launch`` of ``python -m module args`` on ``num_processes`` processes of this machine.

    A config file (``accelerate config``; DeepSpeed, FSDP, GPU ids) decides the distributed mode;
    without one it is DDP (``--multi_gpu``: NCCL on GPUs, gloo on CPUs).
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        cmd += ["--config_file", str(config_file)]
    else:
        cmd += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    cmd += ["--num_processes", str(num_processes), "--mixed_precision", mixed_precision,
            "--main_process_port", str(free_port()), "-m", module, *args]
    return cmd


def run_launched(cmd: Sequence[str], log: Callable[[str], None] = print, tail_lines: int = 60) -> None:
    """Run a launch, streaming its output line by line to ``log``; raise LaunchFailed on failure."""
    env = {**os.environ, LAUNCHED_ENV: "1", "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=tail_lines)
    with subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          bufsize=1) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                log(tail[-1])
        except BaseException:  # Ctrl-C in the kernel: stop the launched processes too
            proc.terminate()
            proc.wait(timeout=30)
            raise
    if proc.returncode != 0:
        raise LaunchFailed(f"the launched step failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                           + "\n".join(tail))
