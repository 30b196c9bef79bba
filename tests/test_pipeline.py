"""End to end: every notebook on smoke.yaml through `aresnb run`, then what the run must show."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aresnb.paths import STAGES, read_json

from .conftest import ROOT, SMOKE_SECRET

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
    cmd = [sys.executable, "-m", "aresnb.cli", "run", str(ROOT / "params" / "smoke.yaml"),
           "--set", f"run.output_dir={smoke_run.run_dir.parent}", "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ARESNB_TEACHER_KEY": SMOKE_SECRET})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("skipped") == 7, r.stdout


def test_api_key_never_reaches_an_output(smoke_run):
    secret = SMOKE_SECRET.encode()
    leaks = [p for p in smoke_run.run_dir.parent.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not leaks, leaks


def test_report_is_written(smoke_run):
    r = subprocess.run([sys.executable, "-m", "aresnb.cli", "report", str(smoke_run.run_dir)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    html = Path(r.stdout.strip().splitlines()[-1]).read_text()
    assert "<img" in html and "win rate" in html.lower()
