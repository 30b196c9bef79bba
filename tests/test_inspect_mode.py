"""Inspect mode: a stage asked to run on a finished run returns the stored summary when the
runner's rule (aresnb.stages.steps) says that step is done with the key it would have now."""

from aresnb.config import load_config
from aresnb.io import write_json
from aresnb.paths import DATA, PPO, RunPaths
from aresnb.stages import data as data_stage
from aresnb.stages.steps import build_schedule, reusable_summary, step_key, Step, NOTEBOOKS_DIR


def _finished_run(tmp_path, *overrides, status="done"):
    """A run folder whose manifest records 01_data and round_1/04_ppo done under today's keys."""
    cfg = load_config(None, [f"run.output_dir={tmp_path}", *overrides])
    paths = RunPaths(cfg)
    schedule = build_schedule(cfg.ares.rounds)
    stages = {}
    for step in schedule[:4]:  # 01, 02, round_1/03, round_1/04
        stages[step.label] = {"status": "done", "completion_id": f"c-{step.stage}"}
        stages[step.label]["key"] = step_key(cfg, step, stages, schedule, NOTEBOOKS_DIR / f"{step.stage}.ipynb")
    stages[schedule[0].label]["status"] = status
    write_json(paths.manifest, {"stages": stages})
    write_json(paths.summary_file(DATA), {"stage": DATA, "stored": True})
    write_json(paths.summary_file(PPO, 1), {"stage": PPO, "round": 1, "stored": True})
    return cfg, paths


def test_a_done_step_with_the_same_key_is_reused(tmp_path):
    cfg, paths = _finished_run(tmp_path)
    assert reusable_summary(cfg, paths, DATA) == {"stage": DATA, "stored": True}
    assert reusable_summary(cfg, paths, PPO, 1)["stored"] is True
    # the stage itself shows what is there and computes nothing
    assert data_stage.run(cfg, paths) == {"stage": DATA, "stored": True}
    assert not paths.dataset_dir.exists()


def test_the_finished_runs_own_params_file_opens_it(tmp_path):
    cfg, paths = _finished_run(tmp_path)
    import yaml

    paths.params_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    reopened = load_config(paths.params_file)
    assert reusable_summary(reopened, RunPaths(reopened), DATA) is not None


def test_anything_changed_means_computing(tmp_path):
    cfg, paths = _finished_run(tmp_path)
    changed = load_config(None, [f"run.output_dir={tmp_path}", "data.synthetic.n_train=10"])
    assert reusable_summary(changed, RunPaths(changed), DATA) is None  # its own parameters
    ppo_changed = load_config(None, [f"run.output_dir={tmp_path}", "ppo.lr=1e-5"])
    assert reusable_summary(ppo_changed, RunPaths(ppo_changed), PPO, 1) is None
    assert reusable_summary(ppo_changed, RunPaths(ppo_changed), DATA) is not None  # upstream untouched
    assert reusable_summary(cfg, paths, PPO, 2) is None  # a round the schedule does not have


def test_a_step_the_runner_is_executing_is_never_reused(tmp_path):
    cfg, paths = _finished_run(tmp_path, status="running")
    assert reusable_summary(cfg, paths, DATA) is None


def test_no_manifest_no_reuse(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}"])
    assert reusable_summary(cfg, RunPaths(cfg), DATA) is None
    assert Step(DATA).label == DATA
