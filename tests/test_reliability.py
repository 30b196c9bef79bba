"""Issue 16, case by case: nothing broken passes, nothing is checked late, one writer per run.

Each test re-runs one case of the issue as a user would meet it: stage output checks (with the
local server's fault injection), split and image checks, checks before work starts, the run
folder's lock (two real concurrent runs), Ctrl-C, and a real ``kill -9`` of a run followed by
its resume. Waits are bounded by deadlines only so that a broken build fails instead of hanging;
no assertion depends on timing.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from aresnb.pipeline import preflight

from aresnb.config import ConfigError, load_config
from aresnb.data.schema import DataError
from aresnb.data.splits import EmptySplitWarning, check_splits
from aresnb.errors import StageFailed
from aresnb.io import read_json
from aresnb.paths import RunPaths
from aresnb.pipeline import runner
from aresnb.pipeline.runlock import RunFolderLocked, RunLock
from aresnb.pipeline.runner import RunError, RunRefused, run_pipeline
from aresnb.stages import data as data_stage
from aresnb.stages import teacher_scores
from aresnb.stages.checks import check_corrections, check_scored_samples

from conftest import ROOT, SMOKE_SECRET, SUBPROCESS_TIMEOUT_S, sample_row, stub_sampling, write_stage_notebooks

SMOKE = ROOT / "params" / "smoke.yaml"
DEADLINE_S = 300  # only so that a broken build fails instead of hanging


def _wait_for(condition, proc=None, what="condition"):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE_S} s")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ---- 1. a stage that produced nothing fails ---------------------------------------------------


def test_stage_03_drop_share_rule():
    ok = {"samples": 10, "dropped": 5, "dropped_by_reason": {"invalid_reply": 5}}
    check_scored_samples(ok, 0.5, "s.parquet")  # exactly the share: still enough to train on
    with pytest.raises(StageFailed, match=r"6 of 10 samples \(60%\) .*invalid_reply 6.*max_drop_share=0.5"):
        check_scored_samples({**ok, "dropped": 6, "dropped_by_reason": {"invalid_reply": 6}}, 0.5, "s.parquet")
    with pytest.raises(StageFailed, match="every sample"):  # all dropped fails whatever the threshold
        check_scored_samples({**ok, "dropped": 10}, 1.0, "s.parquet")
    with pytest.raises(StageFailed, match="no rationale was sampled"):
        check_scored_samples({"samples": 0, "dropped": 0}, 0.5, "s.parquet")


def _problem(i):
    return dict(qid=f"q{i}", question=f"Which animal {i} is a mammal?", choices=["shark", "dog"], answer=1, hint="",
                image="", has_image=False, caption="", lecture="", solution="A dog feeds its young milk.",
                subject="natural science", grade="grade3", category="", topic="", skill="", task="", split="train",
                image_record="", features_zeroed=False)


def test_stage_03_fails_when_every_teacher_reply_is_malformed(tmp_path, monkeypatch):
    """The local server answers every request with a malformed reply: the stage fails, naming the
    reason; the samples it dropped are on disk to look at."""
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=t03", "rollout.max_problems=4",
                             "teacher.faults.rate_malformed=1.0"])
    paths = RunPaths(cfg)
    datasets.DatasetDict(train=datasets.Dataset.from_list([_problem(i) for i in range(4)])).save_to_disk(str(paths.dataset_dir))
    monkeypatch.setattr(teacher_scores, "sampled_batches", stub_sampling(lambda problems: [
        sample_row(p["qid"], k, "A dog feeds its young milk. So the answer is (B).") for p in problems for k in range(2)]))
    with pytest.raises(StageFailed, match=r"8 of 8 samples \(100%\) were dropped \(invalid_reply 8\), every sample"):
        teacher_scores.run(cfg, paths, 1)
    assert paths.samples_file(1).exists()


def test_stage_05_zero_corrections_rule():
    """A correction is a usable Teacher reply: "corrected" or "unchanged"; all fallbacks = zero."""
    fallback = {"status": "fallback", "detail": "not valid JSON"}
    check_corrections([fallback, {"status": "unchanged"}], "c.parquet")
    check_corrections([fallback, {"status": "corrected"}], "c.parquet")
    with pytest.raises(StageFailed, match=r"zero corrections: .* every one of the 2 rationales .*first error: not valid JSON"):
        check_corrections([fallback, fallback], "c.parquet")
    with pytest.raises(StageFailed, match="zero corrections"):
        check_corrections([], "c.parquet")
# (stage 05 itself with every reply malformed: tests/test_correction_stage.py, on its tiny run)


SIGNAL_BODY = """
from aresnb.config import load_config
from aresnb.errors import StageFailed
from aresnb.io import write_json
from aresnb.paths import RunPaths, ROUND_STAGES
cfg = load_config(params)
paths = RunPaths(cfg)
(paths.run_dir / "executions.log").open("a").write("{stage}\\n")
if "{stage}" == "03_teacher_scores" and not (paths.run_dir / "teacher_fixed").exists():
    raise StageFailed("stage 03: 8 of 8 samples (100%) were dropped (invalid_reply 8), every sample")
write_json(paths.summary_file("{stage}", round_index if "{stage}" in ROUND_STAGES else None), {{"stage": "{stage}"}})
"""


@pytest.mark.slow
def test_runner_reports_a_failed_stage_check_in_one_line_and_retries_it(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", write_stage_notebooks(tmp_path / "nb", SIGNAL_BODY))
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'out'}", "run.name=checks"])
    paths = RunPaths(cfg)
    with pytest.raises(RunError) as e:
        run_pipeline(cfg, stages=["01_data", "02_baseline", "03_teacher_scores"], output="quiet")
    first_line = str(e.value).splitlines()[0]
    assert first_line == ("stage round_1/03_teacher_scores failed: stage 03: 8 of 8 samples (100%) were dropped "
                          "(invalid_reply 8), every sample")
    assert "failing cell" not in str(e.value) and "Traceback" not in str(e.value)
    entry = read_json(paths.manifest)["stages"]["round_1/03_teacher_scores"]
    assert entry["status"] == "failed" and first_line in entry["error"]
    # the manifest says failed, so the same command retries it (and only it)
    (paths.run_dir / "teacher_fixed").touch()
    run_pipeline(cfg, stages=["01_data", "02_baseline", "03_teacher_scores"], output="quiet")
    assert (paths.run_dir / "executions.log").read_text().split() == [
        "01_data", "02_baseline", "03_teacher_scores", "03_teacher_scores"]
    assert read_json(paths.manifest)["stages"]["round_1/03_teacher_scores"]["status"] == "done"


# ---- 3. splits and images ---------------------------------------------------------------------


def _scienceqa_dir(tmp_path, n_train=6, n_val=2, n_test=4):
    from aresnb.data.synthetic import write_synthetic_scienceqa

    return write_synthetic_scienceqa(tmp_path / "sqa", n_train, n_val, n_test, image_size=16, seed=0)


def _data_cfg(tmp_path, root, *extra):
    return load_config(None, [f"run.output_dir={tmp_path / 'out'}", "run.name=data", "data.source=scienceqa",
                              f"data.path={root}", *extra])


def test_a_qid_in_two_splits_is_an_error_naming_the_qids(tmp_path):
    root = _scienceqa_dir(tmp_path)
    splits = json.loads((root / "pid_splits.json").read_text())
    leaked = splits["test"][:2]
    splits["train"] += leaked  # test problems added to train, as in the issue
    (root / "pid_splits.json").write_text(json.dumps(splits))
    cfg = _data_cfg(tmp_path, root)
    with pytest.raises(DataError) as e:
        data_stage.run(cfg, RunPaths(cfg))
    msg = str(e.value)
    assert "2 qid(s) appear in more than one split" in msg and "data.allow_overlap=true" in msg
    assert all(f"{q!r} (train, test)" in msg for q in leaked)
    assert not RunPaths(cfg).dataset_dir.exists()  # refused before anything was written
    # for those who mean it
    cfg = _data_cfg(tmp_path, root, "data.allow_overlap=true")
    summary = data_stage.run(cfg, RunPaths(cfg))
    assert summary["problems"] == {"train": 8, "val": 2, "test": 4}


def test_an_empty_split_warns_and_an_empty_train_split_errors(tmp_path):
    rows = {"train": [{"qid": "1"}], "val": [{"qid": "2"}], "test": []}
    with pytest.warns(EmptySplitWarning, match="the test split is empty"):
        check_splits(rows, allow_overlap=False, source="src")
    with pytest.raises(DataError, match=r"'1' \(train, 2 times\)"):
        check_splits({**rows, "train": [{"qid": "1"}, {"qid": "1"}]}, allow_overlap=True, source="src")
    # stage 01 on a split file whose train list is empty: a data error there, not a plotting cell's
    root = _scienceqa_dir(tmp_path)
    splits = json.loads((root / "pid_splits.json").read_text())
    (root / "pid_splits.json").write_text(json.dumps({**splits, "train": []}))
    cfg = _data_cfg(tmp_path, root)
    with pytest.raises(DataError, match="the train split is empty"):
        data_stage.run(cfg, RunPaths(cfg))


@pytest.mark.parametrize("policy", ["error", "skip", "zeros"])
def test_a_corrupt_image_is_a_data_error_naming_qid_and_path_and_follows_missing_image(tmp_path, policy):
    from aresnb.data.scienceqa import load_scienceqa_dir

    root = _scienceqa_dir(tmp_path)
    problems = json.loads((root / "problems.json").read_text())
    qid = next(q for q in json.loads((root / "pid_splits.json").read_text())["train"] if problems[q]["image"])
    image = root / "images" / "train" / qid / problems[qid]["image"]
    image.write_bytes(b"this is not a PNG")
    if policy == "error":
        with pytest.raises(DataError, match=rf"problem '{qid}': unreadable image {image} \(UnidentifiedImageError"):
            load_scienceqa_dir(root, policy)
        return
    rows, stats = load_scienceqa_dir(root, policy)
    train = {r["qid"]: r for r in rows["train"]}
    if policy == "skip":
        assert qid not in train and stats["skipped"] == 1
    else:
        assert train[qid]["features_zeroed"] and train[qid]["image"] == "" and stats["zero_filled"] == 1


# ---- 4. checked before work starts ------------------------------------------------------------


def _remote_teacher(*extra):
    return load_config(SMOKE, ["teacher.serve_local=false", "teacher.base_url=http://127.0.0.1:9/v1", *extra])


def test_api_key_variables_of_the_endpoints_selected_stages_call():
    cfg = _remote_teacher()
    env = {}
    [problem] = preflight.key_problems(cfg, ["03_teacher_scores", "07_evaluation"], env)
    assert "ARESNB_TEACHER_KEY is not set" in problem and "Teacher at http://127.0.0.1:9/v1 (stage 03)" in problem
    assert "judge at http://127.0.0.1:9/v1 (stage 07)" in problem
    assert preflight.key_problems(cfg, ["01_data", "02_baseline", "06_answer_lora"], env) == []
    assert preflight.key_problems(cfg, ["04_ppo"], {"ARESNB_TEACHER_KEY": SMOKE_SECRET}) == []
    assert preflight.key_problems(load_config(SMOKE), ["03_teacher_scores", "07_evaluation"], env) == []  # local
    # a judge with its own endpoint and key (evaluation.judge; each None = the Teacher's)
    cfg = load_config(SMOKE, ["evaluation.judge.base_url=https://judge.example/v1", "evaluation.judge.model=gpt-4o",
                              "evaluation.judge.api_key_env=JUDGE_KEY"])
    [problem] = preflight.key_problems(cfg, ["03_teacher_scores", "07_evaluation"], {"ARESNB_TEACHER_KEY": "x"})
    assert problem.startswith("the environment variable JUDGE_KEY is not set; the judge at https://judge.example/v1")
    cfg.evaluation.judge.api_key_env = None  # the judge's endpoint, the Teacher's key variable
    [problem] = preflight.key_problems(cfg, ["07_evaluation"], {})
    assert "ARESNB_TEACHER_KEY is not set" in problem and "judge at https://judge.example/v1" in problem


def test_unset_key_refuses_the_run_before_any_work_and_params_reports_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ARESNB_TEACHER_KEY"}
    remote = ["--set", "teacher.serve_local=false", "--set", "teacher.base_url=http://127.0.0.1:9/v1"]
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "run", str(SMOKE), *remote,
                        "--set", f"run.output_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "cannot start" in r.stderr and "export ARESNB_TEACHER_KEY=..." in r.stderr
    assert not (tmp_path / "smoke").exists()  # nothing ran, nothing was written
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "params", str(SMOKE), *remote],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "valid" in r.stdout and "ARESNB_TEACHER_KEY is not set" in r.stderr
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "params", str(SMOKE), *remote, "--stages", "01-02"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # stages 01-02 call no endpoint


GAP_BODY = """
from aresnb.config import load_config
from aresnb.paths import RunPaths
(RunPaths(load_config(params)).run_dir / "executions.log").open("a").write("{stage}\\n")
"""


def test_a_gap_in_the_stage_list_refuses_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "NOTEBOOKS_DIR", write_stage_notebooks(tmp_path / "nb", GAP_BODY))
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'out'}", "run.name=gap"])
    with pytest.raises(RunRefused, match="round_1/03_teacher_scores needs 02_baseline"):
        run_pipeline(cfg, stages=["01_data", "03_teacher_scores"], output="quiet")
    assert not (RunPaths(cfg).run_dir / "executions.log").exists()  # 01 did not run first
    assert not RunPaths(cfg).manifest.exists()


def test_cross_field_rules_and_paths_are_checked_before_work(tmp_path):
    with pytest.raises(ConfigError, match=r"fault rates sum to 1.1, above 1 \(rate_429=0.5, rate_malformed=0.6\)"):
        load_config(SMOKE, ["teacher.faults.rate_429=0.5", "teacher.faults.rate_malformed=0.6"])
    with pytest.raises(ConfigError, match=r"ppo.micro_batch_size \(128\) exceeds ppo.batch_size \(64\)"):
        load_config(SMOKE, ["ppo.micro_batch_size=128"])
    cfg = load_config(SMOKE, ["ppo.batch_size=66", "ppo.micro_batch_size=30"])
    assert preflight.process_problems(cfg, ["04_ppo"], {"WORLD_SIZE": "4"}) == [
        "ppo.batch_size (66) is not divisible by the 4 processes (WORLD_SIZE=4)"]
    assert preflight.process_problems(cfg, ["04_ppo"], {}) == []  # no launcher: one process
    assert preflight.process_problems(cfg, ["03_teacher_scores"], {"WORLD_SIZE": "4"}) == []
    cfg = load_config(SMOKE, ["data.source=scienceqa", f"data.path={tmp_path / 'nowhere'}",
                              f"teacher.cassette={tmp_path / 'missing.jsonl'}"])
    found = preflight.path_problems(cfg, ["01_data", "03_teacher_scores"], tmp_path)
    assert found == [f"data.path: directory not found: {tmp_path / 'nowhere'}",
                     f"teacher.cassette: file not found: {tmp_path / 'missing.jsonl'}"]
    assert preflight.path_problems(cfg, ["02_baseline"], tmp_path) == []


# ---- 5. YAML numbers, --set errors ----------------------------------------------------------


def test_yaml_exponent_without_a_dot_is_a_number(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("ppo:\n  lr: 1e-5\n  adam_eps: 2E-4\nbaseline:\n  lr: 3.0e-3\n")
    cfg = load_config(f)
    assert (cfg.ppo.lr, cfg.ppo.adam_eps, cfg.baseline.lr) == (1e-5, 2e-4, 3e-3)
    assert load_config(f, ["ppo.lr=5e-6"]).ppo.lr == 5e-6
    assert load_config(f, ["run.name=e5"]).run.name == "e5"  # not a number: stays a string


def test_set_errors_name_set_not_the_parameter_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("ppo:\n  lr: 1e-5\n")
    with pytest.raises(ConfigError) as e:
        load_config(f, ["ppo.batch_size=64", "ppo.lr=fast"])
    assert str(e.value).startswith("--set ppo.lr=fast: ppo.lr: expected a number") and str(f) not in str(e.value)
    with pytest.raises(ConfigError, match=r"^--set ppo.lrr=1: unknown key 'ppo.lrr' \(did you mean 'ppo.lr'\?\)"):
        load_config(f, ["ppo.lrr=1"])
    with pytest.raises(ConfigError, match=r"^--set 'ppo.lr=\[': the value is not valid YAML"):
        load_config(f, ["ppo.lr=["])
    f.write_text("ppo:\n  lr: fast\n")  # the file's own error still names the file
    with pytest.raises(ConfigError, match=rf"^{f}: ppo.lr: expected a number"):
        load_config(f, ["ppo.batch_size=64"])
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "run", str(SMOKE), "--set", "ppo.clip_rnage=0.1"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("aresnb run: --set ppo.clip_rnage=0.1: unknown key")


# ---- 2. the run folder's lock, Ctrl-C -------------------------------------------------------


GATED_BODY = """
import os, pathlib, time
from aresnb.config import load_config
from aresnb.io import write_json
from aresnb.paths import RunPaths, ROUND_STAGES
paths = RunPaths(load_config(params))
outputs = paths.run_dir.parent
with open(outputs / "started_{stage}", "a") as f:
    f.write(f"{{os.getpid()}}\\n")
while not (outputs / "gate").exists():
    time.sleep(0.05)
write_json(paths.summary_file("{stage}", round_index if "{stage}" in ROUND_STAGES else None), {{"stage": "{stage}"}})
"""


def _gated_cli(tmp_path, *args):
    """The real `aresnb` CLI in a child process, on stand-in notebooks that wait for a gate file."""
    nb_dir = write_stage_notebooks(tmp_path / "nb", GATED_BODY)
    # SIGINT as a terminal's foreground program has it: a process started in the background of a
    # non-interactive shell (`make test &`, nohup) inherits SIGINT *ignored*, and Ctrl-C tests would hang
    code = ("import pathlib, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "import aresnb.pipeline.runner as r; r.NOTEBOOKS_DIR = pathlib.Path(sys.argv[1]); "
            "from aresnb.pipeline.cli import main; sys.exit(main(sys.argv[2:]))")
    return [sys.executable, "-c", code, str(nb_dir), "run", str(SMOKE), "--set", f"run.output_dir={tmp_path / 'out'}", *args]


@pytest.mark.slow
def test_a_second_run_on_a_locked_folder_refuses_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    cmd = _gated_cli(tmp_path, "--stages", "01", "--quiet")
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: (out / "started_01_data").exists(), first, "the first run's stage 01")
        second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"{out / 'smoke'} is in use by another aresnb run (PID {first.pid}," in second.stderr
        assert len((out / "started_01_data").read_text().split()) == 1  # the second one ran nothing
    finally:
        (out / "gate").touch()
    assert first.wait(DEADLINE_S) == 0, first.stdout.read()
    # released when the holder exits: the next run gets the folder
    third = subprocess.run(cmd + ["--force"], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    assert third.returncode == 0, third.stderr
    assert len((out / "started_01_data").read_text().split()) == 2


def test_the_lock_of_a_killed_process_is_not_stale(tmp_path):
    lock = tmp_path / "run" / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from aresnb.pipeline.runlock import RunLock; "
                               f"held = RunLock({str(lock)!r}).acquire(); print('held', flush=True); time.sleep(600)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderLocked, match=f"PID {holder.pid},"):
        RunLock(lock).acquire()
    holder.kill()  # SIGKILL: nothing gets to clean up
    holder.wait()
    with RunLock(lock):  # the OS released the lock with the process
        assert lock.read_text().split("\n")[0] == str(os.getpid())


@pytest.mark.slow
def test_ctrl_c_prints_one_line_stops_the_kernel_and_marks_the_stage_interrupted(tmp_path):
    out = tmp_path / "out"
    cmd = _gated_cli(tmp_path, "--stages", "01")  # not --quiet: cell output streams as users see it
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    _wait_for(lambda: (out / "started_01_data").exists(), proc, "stage 01 running")
    kernel_pid = int((out / "started_01_data").read_text().split()[0])
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    try:  # it stops within its grace periods (10 s + 10 s); past two minutes it hangs: show where
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)  # aresnb run prints every thread's stack (faulthandler)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("aresnb run did not stop within 120 s of Ctrl-C; its output and stacks:\n" + proc.communicate()[0])
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "Error" not in output, output
    assert output.rstrip().splitlines()[-1] == \
        "aresnb run: interrupted during 01_data; run the same command again to resume"
    assert output.count("interrupted") == 1
    entry = read_json(out / "smoke" / "manifest.json")["stages"]["01_data"]
    assert entry["status"] == "interrupted"
    assert not _alive(kernel_pid)  # no kernel left behind
    (out / "gate").touch()
    again = subprocess.run(cmd + ["--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    assert again.returncode == 0 and "01_data: running" in again.stdout  # retried, not skipped


# ---- 6. real runs of the real notebooks on a tiny configuration -----------------------------


TINY = ["data.synthetic.n_train=8", "data.synthetic.n_val=2", "data.synthetic.n_test=2", "model.d_model=32",
        "model.d_ff=64", "model.d_kv=8", "model.num_heads=2", "model.num_layers=1", "model.num_decoder_layers=1",
        "model.vocab_size=300", "baseline.epochs=1", "baseline.batch_size=8", "rollout.samples_per_problem=2",
        "rollout.max_new_tokens=24"]


def _tiny_cmd(out, *extra):
    sets = [a for kv in [*TINY, f"run.output_dir={out}", *extra] for a in ("--set", kv)]
    return [sys.executable, "-m", "aresnb.pipeline.cli", "run", str(SMOKE), *sets]


ENV = {**os.environ, "ARESNB_TEACHER_KEY": SMOKE_SECRET}


@pytest.fixture(scope="module")
def tiny_upstream(tmp_path_factory):
    """Stages 01-02 of a tiny real run, done once; tests copy its outputs folder."""
    out = tmp_path_factory.mktemp("tiny") / "outputs"
    r = subprocess.run(_tiny_cmd(out) + ["--stages", "01-02", "--quiet"], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def _copy(tiny_upstream, tmp_path):
    out = tmp_path / "outputs"
    shutil.copytree(tiny_upstream, out)
    return out


@pytest.mark.slow
def test_every_reply_malformed_fails_stage_03_in_one_line_and_a_rerun_retries_it(tiny_upstream, tmp_path):
    out = _copy(tiny_upstream, tmp_path)
    cmd = _tiny_cmd(out, "teacher.faults.rate_malformed=1.0") + ["--stages", "01-03", "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count("skipped") == 2  # 01 and 02 came from before
    [line] = [ln for ln in r.stderr.splitlines() if "failed" in ln]
    assert line.startswith("aresnb run: stage round_1/03_teacher_scores failed: stage 03: 16 of 16 samples (100%)")
    assert "invalid_reply" in line and "failing cell" not in r.stderr and "Traceback" not in r.stderr
    entry = read_json(out / "smoke" / "manifest.json")["stages"]["round_1/03_teacher_scores"]
    assert entry["status"] == "failed"
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert "round_1/03_teacher_scores: running" in again.stdout  # failed is retried, never skipped


@pytest.mark.slow
def test_kill_9_of_a_real_run_then_the_same_command_resumes(tiny_upstream, tmp_path):
    out = _copy(tiny_upstream, tmp_path)
    cmd = _tiny_cmd(out, "teacher.faults.latency_ms=300") + ["--stages", "01-03", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    manifest = out / "smoke" / "manifest.json"

    def stage_03_running():
        stages = json.loads(manifest.read_text())["stages"] if manifest.exists() else {}
        return stages.get("round_1/03_teacher_scores", {}).get("status") == "running"

    _wait_for(stage_03_running, proc, "stage 03 running")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "smoke" / "run.lock").read_text().split("\n")[0] == str(proc.pid)  # its PID is still written
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr  # the killed run's lock did not outlive it
    assert r.stdout.count("skipped") == 2 and "round_1/03_teacher_scores: running" in r.stdout
    stages = read_json(manifest)["stages"]
    assert stages["round_1/03_teacher_scores"]["status"] == "done"
    assert read_json(out / "smoke" / "round_1" / "03_teacher_scores" / "summary.json")["samples"] == 16
