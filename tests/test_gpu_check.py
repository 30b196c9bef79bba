"""benchmarks/gpu_check.py --tiny: the GPU check's code path on the CPU, end to end (tiny shapes).

Every measurement runs and fits, and the JSON projects one ARES round stage by stage. The
numbers of a tiny CPU run mean nothing; the structure is what a GPU run fills in.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
MEASUREMENTS = {"sft", "sft_max_length", "lora_qcm_a", "lora_qcmg_a", "sampling", "greedy", "answers", "ppo"}
STAGES = ["02_baseline", "03_teacher_scores", "04_ppo", "05_correction_sft", "06_answer_lora"]


def test_tiny_check_measures_everything_and_projects_each_stage(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] and report["device"]["kind"] == "cpu" and set(report["models"]) == {"base", "large"}
    for name, model in report["models"].items():
        m = model["measurements"]
        assert set(m) == MEASUREMENTS, name
        assert all(x["fit"] for x in m.values()), name
        assert m["sft"]["samples_per_s"] > 0 and m["ppo"]["sequences_per_s"] > 0 and m["sampling"]["tokens_per_s"] > 0
        assert m["sampling"]["samples_per_prompt"] == 4 and m["ppo"]["buffer"] == 3 * m["ppo"]["sequences_per_step"]
        projection = model["projection"]
        assert list(projection["stages"]) == STAGES
        assert all(s["hours"] > 0 for s in projection["stages"].values())
        assert projection["total_hours"] == pytest.approx(sum(s["hours"] for s in projection["stages"].values()))
    base, large = (report["models"][n]["projection"]["stages"]["04_ppo"]["parts"]["PPO optimizer steps"] for n in ("base", "large"))
    assert base["count"] == 2 * large["count"]  # the paper's 10 passes (Base) against 5 (Large)


def test_full_check_refuses_without_a_gpu(tmp_path):
    # on a machine with a GPU the check is run without one: CUDA_VISIBLE_DEVICES="" hides every GPU
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "no GPU" in proc.stderr and not (tmp_path / "x.json").exists()


def test_a_spent_budget_skips_and_a_failing_model_is_recorded_the_json_keeps_both(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--budget-s", "0", "--models", "base,nosuch",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "gpu_check: FAILED at nosuch (setup)" in proc.stdout  # the failing step, named
    report = json.loads(out.read_text())
    assert report["status"] == "failed: nosuch (setup)" and "scienceqa_nosuch.yaml" in report["models"]["nosuch"]["error"]
    skipped = report["models"]["base"]["measurements"]
    assert set(skipped) == MEASUREMENTS and all("skipped" in m and m["fit"] is None for m in skipped.values())
    assert report["models"]["base"]["projection"]["total_hours"] is None


def test_a_killed_check_leaves_what_it_measured(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.Popen([sys.executable, "-u", str(SCRIPT), "--tiny", "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:  # the first measurement is written: then the time limit's SIGTERM
        if line.startswith("base sft:"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 124
    report = json.loads(out.read_text())
    assert report["status"].startswith("stopped (exit 124)") and report["models"]["base"]["measurements"]["sft"]["fit"]
