"""aresnb.ppo under `accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine.

accelerate 1.15 starts a single process for `--cpu --num_processes 2` (multi-CPU there means
mpirun); `--multi_gpu` goes through torch.distributed.run, and without CUDA the processes meet
over gloo on the CPU: two-process DDP, as on GPUs.

This file is also the launched script: ``python tests/test_ppo_accelerate.py OUT_DIR`` trains a
tiny T5 on a hand-made buffer and writes each rank's parameter checksum.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def launched_main(out_dir: str) -> None:
    import copy
    import dataclasses

    import torch

    sys.path.insert(0, str(HERE))
    from test_ppo import make_samples, tiny_t5

    from aresnb.config import PPOConfig
    from aresnb.ppo import make_accelerator, train_ppo
    from aresnb.value_model import Seq2SeqValueModel

    accelerator = make_accelerator()  # CPU-only here: gloo
    cfg = dataclasses.replace(PPOConfig(), batch_size=4, minibatch_size=2, ppo_epochs=2, lr=1e-3,
                              save_every_updates=1, grad_accum=1)
    policy = tiny_t5()
    before = torch.cat([p.detach().flatten() for p in policy.parameters()]).clone()
    ref = copy.deepcopy(policy)
    value = Seq2SeqValueModel.from_policy(policy)
    result = train_ppo(policy, ref, value, make_samples(10), cfg, out_dir, accelerator=accelerator)
    after = torch.cat([p.detach().flatten() for p in policy.parameters()])
    rank = accelerator.process_index
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
        "processes": accelerator.num_processes, "updates": result.updates,
        "checksum": float(after.double().sum()), "moved": float((after - before).abs().max()),
    }))


@pytest.mark.slow
def test_two_processes_train_in_sync(tmp_path):
    launcher = Path(sys.executable).parent / "accelerate"
    if not launcher.exists():
        pytest.skip(f"no accelerate launcher next to {sys.executable}")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(Path(__file__)), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["processes"] == 2 and r["updates"] == 2 for r in ranks)
    assert ranks[0]["moved"] > 0
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)  # DDP kept them identical
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2] and rows[0]["buffer/sequences"] == 4
    assert (tmp_path / "checkpoints" / "step_000002" / "trainer_state.json").exists()


if __name__ == "__main__":
    launched_main(sys.argv[1])
