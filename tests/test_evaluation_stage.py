"""Stage 07 end to end on a hand-made run: real dataset files and the real local reference Teacher
as judge; upstream models replaced by hand-written rationales, MiniLM by a bag-of-words stand-in."""

import pandas as pd
import pytest

from aresnb.config import load_config
from aresnb.data.schema import COLUMNS, to_dataset_dict
from aresnb.io import read_json, read_jsonl, write_json, write_jsonl
from aresnb.paper_numbers import ACCURACY_COLUMNS
from aresnb.paths import RunPaths
from aresnb.present import plots
from aresnb.present.report import write_report
from aresnb.stages import evaluation as stage
from aresnb.stages.results import read_run

from conftest import BagOfWords, ppo_metric_rows

SUBJECTS = ("natural science", "social science", "language science")
FACTS = ["Magnets attract iron.", "Iron is a metal.", "Copper is not attracted by magnets.",
         "Paris is the capital of France.", "Rivers flow downhill.", "Plants need light."]


def _problem(i: int, split: str) -> dict:
    gold = f"{FACTS[i % 6]} {FACTS[(i + 1) % 6]} So the answer is {('first', 'second')[i % 2]}."
    row = {c: "" for c in COLUMNS}
    row.update(qid=f"{split}{i}", question=f"Question {i}: which is true?", choices=["first", "second"],
               answer=i % 2, hint="A hint." if i % 3 == 0 else "", has_image=False, features_zeroed=False,
               solution=gold, subject=SUBJECTS[i % 3], grade=f"grade{3 + i % 8}", split=split)
    return row


def make_upstream(run_dir, n_test=16):
    """What stages 01-06 leave behind, by hand: dataset, rationales, logs, scores, accuracies."""
    paths = RunPaths(run_dir=run_dir)
    test = [_problem(i, "test") for i in range(n_test)]
    to_dataset_dict({"train": [_problem(i, "train") for i in range(4)], "val": [_problem(i, "val") for i in range(4)],
                     "test": test}).save_to_disk(str(paths.dataset_dir))
    # ARES keeps the gold solution; the baseline keeps half of it and adds a false sentence, except
    # on the last four problems where both write the same text (ties).
    ares = [{"qid": p["qid"], "rationale": p["solution"]} for p in test]
    baseline = [{"qid": p["qid"], "rationale": p["solution"] if i >= n_test - 4 else
                 f"{p['solution'].split('. ')[0]}. Paris is the capital of Spain."} for i, p in enumerate(test)]
    write_jsonl(paths.rationales_file("baseline", "test"), baseline)
    write_jsonl(paths.rationales_file("round_1", "test"), ares)
    write_jsonl(paths.metrics_file("02_baseline"), [{"step": s, "loss": 2 / (1 + s)} for s in range(1, 9)])
    write_jsonl(paths.metrics_file("04_ppo", 1), ppo_metric_rows(4))
    write_jsonl(paths.metrics_file("05_correction_sft", 1), [{"step": s, "loss": 1 / s} for s in range(1, 5)])
    write_json(paths.summary_file("04_ppo", 1), {"teacher_score_before": 0.55, "teacher_score_after": 0.62})
    write_json(paths.ppo_eval_file(1, "before"), {"rows": [{"qid": "v", "score": x} for x in (0.5, 0.6)]})
    write_json(paths.ppo_eval_file(1, "after"), {"rows": [{"qid": "v", "score": x} for x in (0.6, 0.7)]})
    paths.stage_dir("03_teacher_scores", 1)
    pd.DataFrame({"qid": ["train0", "train1"], "sample_index": [0, 0], "rationale": ["a", "b"],
                  "scores": [[0.1, 0.9], None], "dropped": [False, True]}).to_parquet(paths.samples_file(1))
    acc = {c: 60.0 for c in ACCURACY_COLUMNS}  # as stage 06 writes it: percent, models baseline / ares
    write_json(paths.summary_file("06_answer_lora"), {"metric": "accuracy (%) by ScienceQA category",
               "accuracy": {"baseline": {"QCM-A": acc}, "ares": {"QCM-A": {**acc, "Avg": 70.0}}}})
    return paths


@pytest.fixture(scope="module")
def stage_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_stage")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=ev", f"teacher.cache_path={out / 'cache.sqlite'}",
                             "evaluation.bootstrap_samples=300"])
    paths = make_upstream(cfg.run_dir())
    # MiniLM's loading is tested in test_evaluation.py; here a stand-in keeps the test quick.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage, "load_similarity_model", lambda name: (BagOfWords(), "bag-of-words stand-in"))
        summary = stage.run(cfg, paths)
    figures = plots.write_all_figures(read_run(paths, cfg.ares.rounds), paths.figures_dir)  # as notebook 07 does
    return cfg, paths, summary, figures


def test_stage_summary_has_the_win_rate_and_both_accuracies(stage_result):
    cfg, paths, s, _ = stage_result
    assert read_json(paths.summary_file("07_evaluation"))["win_rate"] == s["win_rate"]
    c = s["counts"]
    assert c["n"] == 16 and c["wins"] + c["ties"] + c["losses"] == 16
    assert c["wins"] == 12 and c["ties"] >= 4  # identical texts tie, the corrupted baseline loses
    assert s["identical_rationales"] == 4
    # the paper's protocol: one order, a forced choice; identical pairs go to whichever was Option A
    assert s["single_order"]["ares"] >= 12 and s["win_rate"] == pytest.approx(s["single_order"]["ares"] / 16)
    assert s["both_orders_win_rate"] == pytest.approx(12 / 16)
    lo, hi = s["win_rate_ci95"]
    assert lo <= s["win_rate"] <= hi < 1.0 + 1e-9 and lo < 0.75
    # a forced choice: the judge is consistent where it can separate the two, positional where it cannot
    assert s["consistency_rate"] == pytest.approx(12 / 16)
    assert s["judge_model"] == "reference" and s["lengths"]["ares_mean_words"] > 0
    acc = s["accuracy"]
    assert acc["baseline/QCM-A"]["Avg"] == pytest.approx(60.0) and acc["ares/QCM-A"]["Avg"] == pytest.approx(70.0)
    assert s["accuracy_gain_pts"] == {"QCM-A": pytest.approx(10.0)}
    m = s["rationale_metrics"]
    assert m["round_1"]["bleu4"] == pytest.approx(1.0) and m["round_1"]["rougeL"] == pytest.approx(1.0)
    assert m["round_1"]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert m["baseline"]["similarity"] < 0.99
    assert m["baseline"]["bleu1"] < 1.0
    assert s["similarity_model"]["used"] == "bag-of-words stand-in"


def test_stage_writes_judgments_tables_and_figures(stage_result):
    cfg, paths, s, figures = stage_result
    recs = read_jsonl(paths.judgments_file)
    assert len(recs) == 16 and all(r["raw_first"] and r["raw_second"] for r in recs)
    assert {"baseline", "ares", "categories", "outcome"} <= set(recs[0])
    for name in ("win_rate", "rationale_metrics", "accuracy_evaluation"):
        df = pd.read_csv(paths.tables_dir / f"{name}.csv")
        assert len(df) >= 2
        assert r"\begin{tabular}" in (paths.tables_dir / f"{name}.tex").read_text()
        assert (paths.tables_dir / f"{name}.md").read_text().count("|") > 10
    wr = pd.read_csv(paths.tables_dir / "win_rate.csv").set_index("group")
    assert wr.loc["All", "n"] == 16 and {"NAT", "SOC", "LAN", "G1-6", "G7-12", "NO", "TXT"} <= set(wr.index)
    for name in ("sft_loss", "ppo_training", "teacher_scores", "win_rate", "accuracy_by_category"):
        assert name in figures
        for ext in ("png", "pdf"):
            assert (paths.figures_dir / f"{name}.{ext}").stat().st_size > 1000


def test_report_of_the_evaluated_run(stage_result):
    _, paths, s, _ = stage_result
    text = write_report(paths.run_dir).read_text()
    assert f"{100 * s['win_rate']:.1f}%" in text and "ARES (round 1)" in text and "Baseline" in text


def test_missing_rationales_name_the_file_and_qid(tmp_path):
    paths = make_upstream(tmp_path / "run", n_test=4)
    rows = read_jsonl(paths.rationales_file("round_1", "test"))[:-1]
    write_jsonl(paths.rationales_file("round_1", "test"), rows)
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=run"])
    with pytest.raises(ValueError, match=r"rationales_test.jsonl: no rationale for 1 test problem.*test3"):
        stage.run(cfg, paths)
