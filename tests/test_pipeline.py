"""End to end: every notebook on smoke.yaml through `aresnb run`, then what the run must show."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aresnb.io import read_json
from aresnb.paths import PPO, STAGES
from aresnb.present.plots import FIGURES
from aresnb.present.report import SECTION_IDS

from conftest import ROOT, SMOKE_SECRET, SMOKE_TEST_SET, smoke_test_args

pytestmark = pytest.mark.slow


def test_every_stage_completed_and_is_recorded(smoke_run):
    manifest = read_json(smoke_run.manifest)
    expected = ["01_data", "02_baseline", "round_1/03_teacher_scores", "round_1/04_ppo",
                "round_1/05_correction_sft", "06_answer_lora", "07_evaluation"]
    assert list(manifest["stages"]) == expected
    for label, entry in manifest["stages"].items():
        assert entry["status"] == "done", (label, entry.get("error"))
        assert entry["wall_time_s"] > 0
        assert Path(entry["notebook"]).exists()
    assert manifest["params"]["run"]["name"] == "smoke" and len(manifest["params_hash"]) == 16
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert "commit" in manifest["git"]


def test_every_stage_wrote_its_summary(smoke_run):
    for stage in STAGES:
        summary = read_json(smoke_run.run_dir / stage / "summary.json")
        assert summary, stage
    for stage in ("03_teacher_scores", "04_ppo", "05_correction_sft"):
        assert (smoke_run.run_dir / "round_1" / stage / "summary.json").exists()
        assert read_json(smoke_run.run_dir / stage / "summary.json")["latest_round"] == 1


def test_executed_notebooks_have_no_errors(smoke_run):
    for nb_path in sorted(smoke_run.notebooks_dir.glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, nb_path.name


def test_rerun_skips_every_completed_stage(smoke_run):
    cmd = [sys.executable, "-m", "aresnb.pipeline.cli", "run", str(ROOT / "params" / "smoke.yaml"), *smoke_test_args(),
           "--set", f"run.output_dir={smoke_run.run_dir.parent}", "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ARESNB_TEACHER_KEY": SMOKE_SECRET})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("skipped") == 7, r.stdout


def test_api_key_never_reaches_an_output(smoke_run):
    secret = SMOKE_SECRET.encode()
    leaks = [p for p in smoke_run.run_dir.parent.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks, leaks


def test_report_shows_every_section_stage_table_and_figure(smoke_run):
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "report", str(smoke_run.run_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    link = next(line for line in r.stdout.splitlines() if line.startswith("[aresnb] report "))
    html = Path(link.split("file://", 1)[1]).read_text()
    assert "<img" in html and "win rate" in html.lower()
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in html, section
    for name in FIGURES:
        assert f'id="fig-{name}"' in html, name
    assert str(smoke_run.run_dir) not in html and "site-packages" not in html


# ---- what a user watches, reads and opens ------------------------------------------------------


def test_the_terminal_says_little_warns_nothing_and_ends_with_the_headline(smoke_run):
    out = (smoke_run.run_dir.parent / "aresnb_run.stdout").read_text()
    err = (smoke_run.run_dir.parent / "aresnb_run.stderr").read_text()
    lines = out.splitlines()
    assert len(lines) <= 80, out
    assert not re.search(r"warn|Executing Cell|<Figure size|it/s\]|Removed shared tensor", out + err, re.I), out + err
    assert err.strip() == ""
    assert sum(line.startswith("[aresnb] [") and ": running " in line for line in lines) == 7
    assert sum(line.startswith("[aresnb]   ") for line in lines) == 5  # the five headline figures
    assert [line.split()[1] for line in lines[-3:]] == ["report", "figures", "tables"]
    assert all("file://" in line for line in lines[-3:])


def test_trackers_wrote_tensorboard_events_for_sft_and_ppo(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracking = smoke_run.run_dir / "tracking"
    for name in ("02_baseline", "round_1/04_ppo", "round_1/05_correction_sft"):
        assert list((tracking / name).glob("events.out.tfevents.*")), name
    ppo = EventAccumulator(str(tracking / "round_1" / "04_ppo")).Reload()
    steps = read_json(smoke_run.run_dir / "04_ppo" / "summary.json")["optimizer_steps"]
    assert [e.step for e in ppo.Scalars("objective/scores")] == list(range(1, steps + 1))
    sft = EventAccumulator(str(tracking / "02_baseline")).Reload()
    assert len(sft.Scalars("loss")) == len((smoke_run.run_dir / "02_baseline" / "metrics.jsonl").read_text().splitlines())


def test_executed_notebooks_are_trusted_exported_and_their_panels_open_on_an_item(smoke_run, monkeypatch):
    from aresnb.pipeline.notebook_html import is_trusted

    monkeypatch.setenv("JUPYTER_DATA_DIR", str(smoke_run.run_dir.parent / "jupyter"))  # the run's notary
    for nb_path in sorted(smoke_run.notebooks_dir.glob("*.ipynb")):
        page = nb_path.with_suffix(".html").read_text()
        assert "<html" in page and not re.search(r"<script[^>]+src=[\"']?(https?:)?//", page), nb_path.name
        assert is_trusted(nb_path), nb_path.name
    for name in ("03_teacher_scores.round_1", "04_ppo.round_1", "05_correction_sft.round_1", "07_evaluation"):
        nb = json.loads((smoke_run.notebooks_dir / f"{name}.ipynb").read_text())
        state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        problem_boxes = [m["state"] for m in state.values()
                         if m["model_name"] == "DropdownModel" and m["state"].get("description") == "problem"]
        assert problem_boxes and all(b["index"] == 0 for b in problem_boxes), name
        assert "Static view:" in (smoke_run.notebooks_dir / f"{name}.html").read_text(), name


def test_a_notebook_opened_on_the_finished_run_shows_it_without_recomputing(smoke_run, tmp_path):
    import papermill

    corrections = smoke_run.run_dir / "round_1" / "05_correction_sft" / "corrections.parquet"
    before = corrections.stat().st_mtime_ns
    out = tmp_path / "05.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_correction_sft.ipynb"), str(out), kernel_name="python3",
                               parameters={"params": str(smoke_run.params_file)}, cwd=str(ROOT / "notebooks"),
                               progress_bar=False)
    text = out.read_text()
    assert "finished before with these parameters and inputs; showing its stored results" in text
    assert corrections.stat().st_mtime_ns == before


def test_results_table_is_written_from_the_run(smoke_run, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold figures\n<!-- results:end -->\nafter\n")
    r = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "results", str(smoke_run.run_dir),
                        "--readme", str(readme)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert "old figures" not in text and text.startswith("intro\n") and text.endswith("after\n")
    s4 = read_json(smoke_run.summary_file(PPO, 1))
    assert f"{s4['teacher_score_before']:.3f} -> {s4['teacher_score_after']:.3f}" in text
    for stage in STAGES:
        assert f"| {stage} |" in text


def test_two_round_run_killed_between_rounds_resumes_there(smoke_run, tmp_path):
    """Extend the finished 1-round run to 2 rounds, kill it inside round 2, run again."""
    import shutil
    import signal
    import time

    out = tmp_path / "outputs"
    shutil.copytree(smoke_run.run_dir.parent, out, ignore=shutil.ignore_patterns("*.log"))
    cmd = [sys.executable, "-m", "aresnb.pipeline.cli", "run", str(ROOT / "params" / "smoke.yaml"), "--stages", "01-03",
           *smoke_test_args(), "--set", f"run.output_dir={out}", "--set", "ares.rounds=2", "--quiet"]
    env = {**os.environ, "ARESNB_TEACHER_KEY": SMOKE_SECRET}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    manifest_path = out / "smoke" / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        stages = json.loads(manifest_path.read_text())["stages"]
        if stages.get("round_2/03_teacher_scores", {}).get("status") == "running":
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    else:
        pytest.fail("round 2 never started")
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: nothing gets to clean up
    proc.wait()
    first = proc.stdout.read()
    # round 1 came from the finished run: skipped, never repeated
    assert first.count("skipped") == 3, first  # 01, 02, round_1/03

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("skipped") == 3, r.stdout
    assert "round_2/03_teacher_scores: running" in r.stdout
    manifest = json.loads(manifest_path.read_text())
    assert manifest["rounds"] == 2
    assert manifest["stages"]["round_2/03_teacher_scores"]["status"] == "done"
    summary = read_json(out / "smoke" / "03_teacher_scores" / "summary.json")
    assert summary["latest_round"] == 2 and set(summary["rounds"]) == {"1", "2"}


# ---- each stage's evidence on the embedded default --------------------------------------------


def _smoke_cfg():
    from aresnb.config import load_config

    return load_config(ROOT / "params" / "smoke.yaml", SMOKE_TEST_SET)


def test_data_summary_counts_every_split_and_category(smoke_run):
    s = read_json(smoke_run.run_dir / "01_data" / "summary.json")
    syn = _smoke_cfg().data.synthetic
    assert s["problems"] == {"train": syn.n_train, "val": syn.n_val, "test": syn.n_test}
    for split in ("train", "val", "test"):
        assert all(s["categories"][split][c] > 0 for c in ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12"))


def test_teacher_scores_account_for_every_sample(smoke_run):
    cfg, s = _smoke_cfg(), read_json(smoke_run.run_dir / "03_teacher_scores" / "summary.json")
    df = pd.read_parquet(smoke_run.samples_file(1))
    assert len(df) == s["samples"] == cfg.data.synthetic.n_train * cfg.rollout.samples_per_problem
    assert s["scored"] + s["dropped"] == s["samples"] and sum(s["dropped_by_reason"].values()) == s["dropped"]
    assert s["dropped"] <= cfg.teacher.max_drop_share * s["samples"]
    for r in df.itertuples():
        assert (not r.dropped and len(r.scores) == len(r.sentences) and all(0 <= x <= 1 for x in r.scores)) or \
               (r.dropped and r.scores is None and r.drop_reason)
    assert sum(s["score_histogram"].values()) == s["sentences"] and 0 <= s["score_mean"] <= 1


def test_ppo_ran_the_planned_passes_over_the_whole_buffer(smoke_run):
    """Behaviour, not a lucky outcome (the effect across seeds is benchmarks/ares_effect.py's)."""
    cfg, s = _smoke_cfg(), read_json(smoke_run.run_dir / "04_ppo" / "summary.json")
    assert s["passes"] == cfg.ppo.ppo_epochs and s["optimizer_steps"] == s["expected_optimizer_steps"]
    assert s["sequences_trained"] + s["samples_dropped"] == s["samples_total"] > 0
    assert [k["pass"] for k in s["kl_by_pass"]] == list(range(1, cfg.ppo.ppo_epochs + 1))
    assert all(k["kl_k3"] >= 0 for k in s["kl_by_pass"])
    assert s["sampling_logprob_gap"] < 1e-3  # stage 03's ids and stage 04's log-probs line up
    for when in ("before_rl", "after_rl"):
        q = s["eval_quality"][when]
        assert 0 <= q["empty_rate"] <= 1 and 0 <= q["repeated_sentence_rate"] <= 1 and q["mean_words"] > 0
    assert s["eval_empty_before"] + s["eval_unscored_before"] <= s["eval_problems"]


def test_correction_accounts_for_every_rationale(smoke_run):
    s = read_json(smoke_run.run_dir / "05_correction_sft" / "summary.json")
    assert s["corrected"] + s["unchanged"] + s["fallback"] == s["n_problems"] == _smoke_cfg().correction.max_problems
    assert s["corrected"] + s["unchanged"] > 0
    assert set(s["val_rates"]) >= {"before_rl", "after_rl", "after_sft"}
    for rates in s["val_rates"].values():
        assert all(0.0 <= rates[k] <= 1.0 for k in ("empty_rate", "repeated_sentence_rate", "unfinished_sentence_rate"))


def test_answer_heads_answer_every_test_problem(smoke_run):
    cfg, s = _smoke_cfg(), read_json(smoke_run.run_dir / "06_answer_lora" / "summary.json")
    assert set(s["accuracy"]) == {"baseline", "ares"}
    for model, heads in s["accuracy"].items():
        assert set(heads) == set(cfg.answer.formats)
        for fmt, acc in heads.items():
            assert all(v is None or 0.0 <= v <= 100.0 for v in acc.values())
            rows = [json.loads(line) for line in (smoke_run.answer_dir(model, fmt) / "predictions_test.jsonl").open()]
            assert len(rows) == s["n_test"] == cfg.data.synthetic.n_test
            assert sum(not r["extracted"] for r in rows) == s["extraction_failures"][model][fmt]
    ab = s["image_ablation"]
    assert 0.0 <= ab["accuracy_without_image"] <= 100.0
    assert ab["accuracy_with_image"] == s["accuracy"]["baseline"]["QCM-A"]["Avg"]


def test_evaluation_reports_win_rate_with_interval_and_both_accuracies(smoke_run):
    s = read_json(smoke_run.run_dir / "07_evaluation" / "summary.json")
    lo, hi = s["win_rate_ci95"]
    assert 0.0 <= lo <= s["win_rate"] <= hi <= 1.0 and hi > lo
    n = _smoke_cfg().data.synthetic.n_test
    assert s["judged_problems"] == n
    c = s["counts"]
    assert c["wins"] + c["ties"] + c["losses"] == c["n"] == n
    assert s["single_order"]["ares"] + s["single_order"]["baseline"] + s["single_order"]["tie_or_invalid"] == n
    claims = s["claims"]["baseline"]["all"]
    assert abs(sum(claims[f"{g}_share"] for g in ("true", "false", "neutral", "unverifiable")) - 1) < 1e-9
    assert set(s["degeneration"]) == {"baseline", "after_rl", "after_sft"}
    assert {"baseline/QCM-A", "ares/QCM-A"} <= set(s["accuracy"])


def test_the_teacher_agreement_benchmark_reads_the_run_through_the_one_reader(smoke_run, tmp_path):
    """benchmarks/llm_teacher_agreement.py on the smoke run, whose Teacher is the reference one: it
    agrees with itself on every sentence, and its usage rows are the stage summaries' own."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import llm_teacher_agreement

    out = tmp_path / "agreement.json"
    assert llm_teacher_agreement.main(["--run", str(smoke_run.run_dir), "--out", str(out)]) == 0
    result = read_json(out)
    assert result["all_stages_done"]
    ag = result["agreement_with_reference_stage03"]
    assert ag["sentences"] > 0 and ag["mean_abs_difference"] == 0.0 and ag["reward_sign_agreement"] == 1.0
    scored = read_json(smoke_run.summary_file("03_teacher_scores", 1))["teacher"]
    assert result["teacher_usage"]["per_stage"]["round_1/03_teacher_scores"]["requests"] == scored["requests"]
    assert set(result["teacher_usage"]["per_stage"]) >= {"round_1/03_teacher_scores", "round_1/05_correction_sft"}
