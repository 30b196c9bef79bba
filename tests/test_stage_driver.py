"""The stage driver's one inputs key (aresnb.stages.driver.StageRun.inputs_key): what each step's
resumable work is tied to. Hand-made run folders: files whose names, sizes and mtimes are signed."""

import os

import pytest

from aresnb.config import load_config
from aresnb.paths import RunPaths
from aresnb.stages import SPECS
from aresnb.stages.driver import ARTEFACTS, UNSIGNED, stage_run


def _touch(path, text="x", mtime_ns=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def run(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=k"])
    paths = RunPaths(cfg)
    _touch(paths.dataset_dir / "dataset_dict.json", mtime_ns=1)
    _touch(paths.features_file("train"), mtime_ns=1)
    _touch(paths.baseline_model_dir / "model.safetensors", mtime_ns=1)
    _touch(paths.ppo_policy_dir(1) / "model.safetensors", mtime_ns=1)
    _touch(paths.samples_file(1), mtime_ns=1)
    return cfg, paths


def _keys(cfg, paths):
    return {"03": stage_run(cfg, paths, "03_teacher_scores", 1).inputs_key(),
            "04": stage_run(cfg, paths, "04_ppo", 1).inputs_key(),
            "05": stage_run(cfg, paths, "05_correction_sft", 1).inputs_key(),
            "05 arm": stage_run(cfg, paths, "05_correction_sft", 1, "correction_only").inputs_key()}


def test_a_new_ppo_policy_changes_what_stage_05_keeps_and_nothing_before_it(run):
    cfg, paths = run
    before = _keys(cfg, paths)
    _touch(paths.ppo_policy_dir(1) / "model.safetensors", "y", mtime_ns=2)  # PPO ran again
    after = _keys(cfg, paths)
    assert after["05"] != before["05"]  # its rationales and corrections came from the old policy
    assert {k: after[k] for k in ("03", "04", "05 arm")} == {k: before[k] for k in ("03", "04", "05 arm")}


def test_a_new_baseline_changes_every_key_that_starts_from_it(run):
    cfg, paths = run
    before = _keys(cfg, paths)
    _touch(paths.baseline_model_dir / "model.safetensors", "y", mtime_ns=2)
    after = _keys(cfg, paths)
    assert after["03"] != before["03"] and after["04"] != before["04"] and after["05 arm"] != before["05 arm"]
    assert after["05"] == before["05"]  # round 1 corrects the PPO policy, not the baseline


def test_what_changes_no_result_changes_no_key_and_what_does_does(run):
    cfg, paths = run
    base = _keys(cfg, paths)
    retry = load_config(cfg.to_dict(), ["teacher.concurrency=2", "teacher.max_retries=1", "run.num_processes=2"])
    assert _keys(retry, paths) == base  # throughput only; the launched processes see the same key
    precision = load_config(cfg.to_dict(), ["run.mixed_precision=bf16"])
    assert all(_keys(precision, paths)[k] != base[k] for k in base)
    seed = load_config(cfg.to_dict(), ["run.seed=1"])
    assert all(_keys(seed, paths)[k] != base[k] for k in base)


def test_every_declared_read_is_signed_or_listed_as_unsigned():
    reads = {name for spec in SPECS.values() for name in spec.reads}
    assert reads - set(ARTEFACTS) - UNSIGNED == set()
    assert UNSIGNED.isdisjoint(ARTEFACTS)
