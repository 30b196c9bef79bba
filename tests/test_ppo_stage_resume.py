"""Stage 04 killed mid-PPO, then run again, ends exactly where an uninterrupted stage 04 ends: the same
policy and critic weights, bit for bit, and the same metrics rows (PPO is deterministic on one
thread). On test_stages.py's tiny run, checkpointing every 2 optimizer steps."""

import shutil

import pytest
import torch

from aresnb.config import load_config
from aresnb.io import read_jsonl
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.paths import PPO, RunPaths
from aresnb.rl.value_model import Seq2SeqValueModel
from aresnb.stages import ppo

from test_stages import TINY, stage01, stage02, stage03, stage04, teacher_cfg  # noqa: F401 -- the tiny run, in order

SAVE_EVERY = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """test_stages.py's tiny run (its stage fixtures use this one), checkpointing every SAVE_EVERY steps."""
    out = tmp_path_factory.mktemp("tiny_resume")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=tiny", f"teacher.cache_path={out / 'cache.sqlite'}",
                             *TINY, f"ppo.save_every_steps={SAVE_EVERY}"])
    return cfg, RunPaths(cfg)


class Killed(Exception):
    pass


def _differing(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    """Names of the tensors that are not bitwise equal (or not in both)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sorted(set(sa) ^ set(sb)) + [k for k in sa if k in sb and not torch.equal(sa[k], sb[k])]


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(("throughput/", "time/"))} for r in rows]


def test_04_killed_mid_ppo_then_run_again_equals_the_uninterrupted_stage(run, teacher_cfg, stage04, tmp_path,
                                                                         monkeypatch):
    _, paths = run
    n_steps = stage04["optimizer_steps"]
    kill_at = n_steps - 1  # in the last pass, with a checkpoint behind it
    assert n_steps >= 4 and stage04["resumed_from_step"] is None
    # a second run folder holding the same upstream (01-03), stage 04 not started
    twin_cfg = load_config(teacher_cfg.to_dict(), [f"run.output_dir={tmp_path}"])
    twin = RunPaths(twin_cfg)
    shutil.copytree(paths.run_dir, twin.run_dir, ignore=lambda d, names: [n for n in names if n == PPO])

    real_train = ppo.train_ppo

    def train_killed_after_step(*args, **kwargs):
        def die(step, row):
            if step == kill_at:
                raise Killed(f"killed after optimizer step {step}")
        return real_train(*args, on_step_end=die, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(ppo, "train_ppo", train_killed_after_step)
        with pytest.raises(Killed):
            ppo.run(twin_cfg, twin, 1, log=lambda line: None)
    killed_dir = twin.stage_path(PPO, 1)
    assert [r["step"] for r in read_jsonl(twin.metrics_file(PPO, 1))] == list(range(1, kill_at + 1))
    assert not twin.ppo_policy_dir(1).exists() and not twin.summary_file(PPO, 1).exists()
    assert (killed_dir / "checkpoints").is_dir()

    resumed = ppo.run(twin_cfg, twin, 1, log=lambda line: None)
    last_checkpoint = kill_at // SAVE_EVERY * SAVE_EVERY
    assert resumed["resumed_from_step"] == last_checkpoint > 0 and resumed["optimizer_steps"] == n_steps

    policy, twin_policy = (load_rationale_model(p.ppo_policy_dir(1)) for p in (paths, twin))
    assert not _differing(policy, twin_policy)
    critic, twin_critic = (Seq2SeqValueModel.from_pretrained(p.ppo_value_dir(1), policy=m)
                           for p, m in ((paths, policy), (twin, twin_policy)))
    assert not _differing(critic, twin_critic)
    rows, twin_rows = (read_jsonl(p.metrics_file(PPO, 1)) for p in (paths, twin))
    assert [r["step"] for r in twin_rows] == list(range(1, n_steps + 1))
    assert _without_timing(twin_rows) == _without_timing(rows)
    for key in ("teacher_score_before", "teacher_score_after", "kl_by_pass", "sequences_trained", "eval_empty_after"):
        assert resumed[key] == stage04[key], key
