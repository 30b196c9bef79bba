"""The HTML report of a (hand-made) finished run: self-contained, and it renders in Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aresnb import plots
from aresnb.evaluation import accuracy, tables, winrate
from aresnb.io import write_json, write_jsonl
from aresnb.paper_numbers import ACCURACY_COLUMNS
from aresnb.paths import RunPaths
from aresnb.ppo import METRIC_NAMES
from aresnb.report import choose_examples, render_report, write_report

from conftest import absent, ppo_metric_rows

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]  # self-contained: no host may be reached


def make_run(root: Path) -> Path:
    """A run directory as stages 01-07 leave it, with hand-made numbers."""
    run_dir = root / "demo"
    paths = RunPaths(run_dir=run_dir)
    rng = np.random.default_rng(0)
    write_jsonl(paths.metrics_file("02_baseline"),
                [{"step": s, "loss": 3.0 / (1 + s / 10), "lr": 1e-3} for s in range(0, 100, 10)])
    write_jsonl(paths.metrics_file("04_ppo", 1), ppo_metric_rows(6))
    write_jsonl(paths.metrics_file("05_correction_sft", 1),
                [{"step": s, "loss": 1.0 / (1 + s)} for s in range(0, 30, 5)])
    verdicts = [winrate.PairVerdict(f"q{i}", bool(i % 2), *(("A", "B") if i % 2 else ("B", "A")) if i < 9 else ("A", "A"))
                for i in range(12)]
    cats = {f"q{i}": ["NAT" if i < 6 else "SOC", "IMG" if i % 3 else "TXT", "G1-6"] for i in range(12)}
    wr = winrate.win_rate_table(verdicts, cats, 200, 0)
    acc = accuracy.accuracy_table({"accuracy": {"baseline": {"QCM-A": {c: 60 + rng.random() * 10 for c in ACCURACY_COLUMNS}},
                                         "round_1": {"QCM-A": {c: 70 + rng.random() * 10 for c in ACCURACY_COLUMNS}}}},
                           rounds=1)
    written = {"win_rate": tables.write_table(wr, paths.tables_dir, "win_rate", "Win rate <of> ARES", 3),
               "accuracy": tables.write_table(acc.drop(columns="key"), paths.tables_dir, "accuracy_evaluation",
                                              "Accuracy (%)", 2)}
    records = [{**json.loads(json.dumps(v.__dict__)), "outcome": v.outcome, "sides": list(v.sides),
                "categories": cats[v.qid], "question": f"Which one is <b>{v.qid}</b>?", "choices": ["x", "y"],
                "answer": 1, "gold": "Gold.", "baseline": "Base rationale.", "ares": "ARES rationale <script>."}
               for v in verdicts]
    write_jsonl(paths.judgments_file, records)
    t = winrate.tally(verdicts)
    write_json(paths.summary_file("07_evaluation"), {
        "stage": "07_evaluation", "judge_model": "reference", "win_rate": t["single_order_win_rate"], "win_rate_ci95": [0.5, 0.9],
        "decisive_win_rate": t["decisive_win_rate"], "decisive_win_rate_ci95": [0.6, 1.0],
        "single_order_win_rate": t["single_order_win_rate"],
        "counts": {k: t[k] for k in ("n", "wins", "ties", "losses", "ties_inconsistent")},
        "consistency_rate": t["consistency_rate"], "position_bias": t["position"],
        "lengths": {"baseline_mean_words": 20.0, "ares_mean_words": 25.5}, "tables": written,
        "paper_win_rate": 69.76, "win_rate_definition": "win = preferred in both orders", "wall_time_s": 3.2})
    plots.write_all_figures(paths, rounds=1)
    write_json(run_dir / "manifest.json", {
        "run": "demo", "params_hash": "abc123", "git": {"commit": "deadbeef", "dirty": False},
        "params": {"run": {"seed": 0}, "evaluation": {"n_examples": 3}, "data": {"source": "synthetic"}},
        "stages": {"07_evaluation": {"stage": "07_evaluation", "status": "done", "wall_time_s": 3.4}}})
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


def test_figures_and_tables_are_written(run_dir):
    for name in ("training_curves", "win_rate", "accuracy_by_category"):
        for ext in ("png", "pdf"):
            assert (run_dir / "figures" / f"{name}.{ext}").stat().st_size > 1000, name
    df = pd.read_csv(run_dir / "tables" / "win_rate.csv")
    assert df.loc[0, "group"] == "All" and df.loc[0, "n"] == 12
    assert r"\begin{tabular}" in (run_dir / "tables" / "accuracy_evaluation.tex").read_text()


def test_training_curves_plot_the_metrics_ppo_logs(run_dir):
    """The PPO panels are the preferred names aresnb.ppo really logs (a rename there must show here)."""
    assert set(plots.PPO_PREFERRED) <= set(METRIC_NAMES)
    fig = plots.training_curves(RunPaths(run_dir=run_dir), rounds=1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["SFT loss"] + [f"PPO {k}" for k in plots.PPO_PREFERRED][:5]
    assert all(ax.lines for ax in fig.axes if ax.get_visible())  # every panel has its curve


def test_report_is_self_contained_and_shows_the_headline(run_dir):
    out = write_report(run_dir)
    text = out.read_text()
    assert out == run_dir / "report.html"
    assert "Win rate of ARES over the baseline" in text and "95% CI [50.0%, 90.0%]" in text
    assert text.count('src="data:image/png;base64,') == len(list((run_dir / "figures").glob("*.png"))) >= 3
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)  # nothing outside the file
    assert "<link" not in text and "<script" not in text  # user text is escaped, no script anywhere
    assert "ARES rationale &lt;script&gt;." in text and "&lt;b&gt;q" in text
    assert "accuracy_evaluation" in text and "ARES (round 1)" in text
    assert text.count('class="ex"') == 3  # evaluation.n_examples from the manifest
    assert "deadbeef" in text


def test_choose_examples_alternates_outcomes():
    recs = [{"qid": str(i), "outcome": o} for i, o in enumerate(["win"] * 5 + ["loss"] * 2 + ["tie"])]
    picked = choose_examples(recs, 4, seed=1)
    assert [r["outcome"] for r in picked] == ["win", "loss", "tie", "win"]
    assert choose_examples(recs, 4, seed=1) == picked


def test_report_of_an_unfinished_run(tmp_path):
    (tmp_path / "r" / "02_baseline").mkdir(parents=True)
    text = render_report(tmp_path / "r")
    assert "Stage 07 (evaluation) has not run" in text and "no manifest.json" in text
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        write_report(tmp_path / "missing")


RENDER_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const m = document.createElement('div');
  m.id = 'render-check';
  m.textContent = 'RENDERED ' + ok + '/' + imgs.length + ' W' + Math.min(...imgs.map(i => i.naturalWidth));
  document.body.appendChild(m);
});
</script>"""


def test_report_renders_its_figures_in_headless_chromium(run_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        absent("Debian's chromium is not installed (make chromium, as root: apt-get install -y chromium)")
    report = write_report(run_dir)
    # A copy with a small probe script: the report itself carries no script.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", RENDER_CHECK + "</body>"))
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r"RENDERED (\d+)/(\d+) W(\d+)", result.stdout)
    assert m, f"no render marker in the DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    ok, total, min_width = map(int, m.groups())
    assert total == len(list((run_dir / "figures").glob("*.png"))) >= 3
    assert ok == total and min_width > 100
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2000",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
