"""aresnb.rl.ppo under `accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine.

accelerate 1.15 starts a single process for `--cpu --num_processes 2` (multi-CPU there means
mpirun); `--multi_gpu` goes through torch.distributed.run, and without CUDA the processes meet
over gloo on the CPU: two-process DDP, as on GPUs.

This file is also the launched script: ``python tests/test_ppo_accelerate.py OUT_DIR`` trains a
tiny T5 on a hand-made buffer and writes each rank's parameter checksum. Two processes must make
the same optimizer steps on the same global batches as one: the same weights, to float tolerance.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def train(out_dir: str, accelerator=None) -> dict:
    """The hand-made run both sides make; returns what the test compares."""
    import dataclasses

    import torch

    sys.path.insert(0, str(HERE))
    from test_ppo import make_samples, tiny_t5

    from aresnb.config import PPOConfig
    from aresnb.model.distributed import make_accelerator
    from aresnb.rl.ppo import train_ppo
    from aresnb.rl.value_model import Seq2SeqValueModel

    accelerator = accelerator or make_accelerator()  # CPU-only here: gloo between launched processes
    cfg = dataclasses.replace(PPOConfig(), batch_size=4, micro_batch_size=1, ppo_epochs=2, lr=1e-3, save_every_steps=1)
    policy = tiny_t5()
    before = torch.cat([p.detach().flatten() for p in policy.parameters()]).clone()
    torch.manual_seed(1)
    value = Seq2SeqValueModel.from_policy(policy)
    result = train_ppo(policy, value, make_samples(10), cfg, out_dir, accelerator=accelerator, log=lambda s: None)
    after = torch.cat([p.detach().flatten() for p in policy.parameters()])
    return {"processes": accelerator.num_processes, "steps": result.optimizer_steps,
            "weights": after.tolist(), "moved": float((after - before).abs().max())}


def launched_main(out_dir: str) -> None:
    from aresnb.model.distributed import make_accelerator

    accelerator = make_accelerator()
    Path(out_dir, f"rank{accelerator.process_index}.json").write_text(json.dumps(train(out_dir, accelerator)))


@pytest.mark.slow
def test_two_processes_train_in_sync(tmp_path):
    # accelerate's own CLI through this interpreter: no dependence on where its script was installed
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__)), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = train(str(tmp_path / "single"))
    # ceil(10 / 4) steps a pass, 2 passes, on either side; each step's batch is the global one
    assert all(r["processes"] == 2 and r["steps"] == 6 for r in ranks) and single["steps"] == 6
    assert ranks[0]["moved"] > 0
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the processes identical
    assert ranks[0]["weights"] == pytest.approx(single["weights"], abs=1e-5)  # ... and equal to one process
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and [r["buffer/sequences"] for r in rows[:3]] == [4, 4, 2]
    assert (tmp_path / "checkpoints" / "step_000006" / "trainer_state.json").exists()


if __name__ == "__main__":
    launched_main(sys.argv[1])
