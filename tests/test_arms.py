"""The ablation arms and two ARES rounds through every stage's ``run`` on a tiny run (seconds).

``ares.rounds: 2`` with ``ares.arms: [rl_only, correction_only, every_round]``: round 2 starts from
round 1's SFT model; ``correction_only`` is stage 05 on the baseline with round 1's SFT recipe;
stage 06 answers with every model (the last round's is ARES); stage 07 judges every comparison and
reports win statistics that say what they are. The schedule's order and reuse rules are checked too.
"""

import dataclasses
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from aresnb.config import load_config
from aresnb.io import read_json, read_jsonl
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.paths import CORRECTION_ONLY, RunPaths
from aresnb.pipeline.runner import mirror_round_summary
from aresnb.present.report.page import render_report
from aresnb.stages import MODULES, answer_lora, evaluation
from aresnb.stages.results import rationale_file, read_problem_outcomes, read_run
from aresnb.stages.steps import Step, build_schedule, run_schedule, upstream_of
from aresnb.teacher import start_local_server

from conftest import BagOfWords
from test_stages import TINY

ARMS = ["rl_only", "correction_only", "every_round"]
MODELS = ["baseline", "rl_only", "correction_only", "round_1", "ares"]


def test_the_schedule_runs_the_arm_after_the_rounds_and_its_key_reads_only_data_and_baseline():
    schedule = build_schedule(2, ARMS)
    labels = [s.label for s in schedule]
    assert labels[-3:] == ["correction_only/05_correction_sft", "06_answer_lora", "07_evaluation"]
    arm = schedule[-3]
    assert arm == Step("05_correction_sft", 1, CORRECTION_ONLY) and arm.output_name == "05_correction_sft.correction_only.ipynb"
    assert [s.label for s in upstream_of(arm, schedule)] == ["01_data", "02_baseline"]
    assert arm in upstream_of(schedule[-1], schedule)  # 06 and 07 read it
    # adding an arm leaves every ARES step's upstream, hence its key, as it was
    plain = build_schedule(2)
    assert all(upstream_of(s, schedule) == upstream_of(s, plain) for s in plain[:-2])
    assert arm.notebook_parameters == {"round_index": 1, "arm": "correction_only"}
    assert Step("05_correction_sft", 2).notebook_parameters == {"round_index": 2}


@pytest.fixture(scope="module")
def arms_run(tmp_path_factory):
    """Every step of the schedule, in order, through the stage modules' run()."""
    out = tmp_path_factory.mktemp("arms_run")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=arms", f"teacher.cache_path={out / 'cache.sqlite'}",
                             *TINY, "ares.rounds=2", f"ares.arms={ARMS}"])
    paths = RunPaths(cfg)
    summaries = {}
    import importlib

    for step in run_schedule(cfg):
        module = importlib.import_module(f"aresnb.stages.{MODULES[step.stage]}")
        if step.stage == "01_data":
            summaries[step.label] = module.run(cfg, paths)
            server = start_local_server(paths.dataset_dir)
            mp = pytest.MonkeyPatch()
            mp.setenv("ARESNB_TINY_KEY", "tiny-key")
            mp.setattr(evaluation, "load_similarity_model", lambda name: (BagOfWords(), "bag-of-words stand-in"))
            cfg = load_config(cfg.to_dict(), ["teacher.serve_local=false", f"teacher.base_url={server.base_url}",
                                              "teacher.api_key_env=ARESNB_TINY_KEY"])
            continue
        kwargs = {"arm": step.arm} if step.arm else {}
        if step.stage == "04_ppo":
            kwargs["log"] = lambda line: None
        summaries[step.label] = module.run(cfg, paths, step.round_index, **kwargs)
        if step.round_index is not None and step.arm is None:
            mirror_round_summary(paths, step)  # as the runner does after a round step
    yield cfg, paths, summaries
    server.stop()
    mp.undo()


def test_round_two_starts_from_round_one_sft_and_correction_only_from_the_baseline(arms_run):
    cfg, paths, s = arms_run
    r2 = s["round_2/05_correction_sft"]
    assert r2["before_rl_model"] == str(paths.sft_model_dir(1))
    # the greedy val rationales round-2 PPO scored before training are round 1's SFT model's
    before = {r["qid"]: r["rationale"] for r in read_json(paths.ppo_eval_file(2, "before"))["rows"]}
    round1 = {r["qid"]: r["rationale"] for r in read_jsonl(paths.rationales_file("round_1", "val"))}
    assert before == {q: round1[q] for q in before}
    co = s["correction_only/05_correction_sft"]
    assert co["arm"] == CORRECTION_ONLY and co["corrected_model"] == str(paths.baseline_model_dir)
    assert "after_rl" not in co["val_rates"] and set(co["val_rates"]) == {"before_rl", "after_sft"}
    # the same SFT as round 1: the same train problems, recipe and seed, so the same steps
    r1 = s["round_1/05_correction_sft"]
    assert co["sft"]["steps"] == r1["sft"]["steps"] == r1["sft"]["total_steps"] and co["n_problems"] == r1["n_problems"]
    # what it corrected are the baseline's own greedy train rationales
    base = load_rationale_model(paths.baseline_model_dir)
    co_rows = pd.read_parquet(paths.corrections_file(1, CORRECTION_ONLY))
    assert set(co_rows["qid"]) == set(pd.read_parquet(paths.corrections_file(1))["qid"])
    assert read_jsonl(paths.rationales_file(CORRECTION_ONLY, "test")) and base is not None
    assert paths.sft_model_dir(1, CORRECTION_ONLY) == paths.run_dir / "correction_only" / "05_correction_sft" / "model"


def test_stage06_answers_with_every_model_on_the_right_weights(arms_run):
    cfg, paths, s = arms_run
    s6 = s["06_answer_lora"]
    assert list(s6["accuracy"]) == MODELS
    assert all(set(s6["accuracy"][m]) == {"QCM-A", "QCMG-A"} for m in MODELS)
    # ARES is the last round's model: its head's base weights are round 2's SFT model's
    from aresnb.sft.answer import load_answer_model

    head = load_answer_model(paths.sft_model_dir(2), paths.answer_dir("ares", "QCM-A") / "adapter")
    round2 = load_rationale_model(paths.sft_model_dir(2))
    name, weight = next((n, p) for n, p in round2.named_parameters() if n.endswith("lm_head.weight") or "shared" in n)
    assert torch.equal(dict(head.named_parameters())[f"base_model.model.{name}"].detach(), weight.detach())


def test_a_head_never_resumes_on_another_model(arms_run):
    """Re-running stage 06 after a model under a head changed retrains that head; the others resume."""
    cfg, paths, s = arms_run
    model = load_rationale_model(paths.sft_model_dir(2))
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(paths.sft_model_dir(2))  # a new ARES model, same shapes
    again = answer_lora.run(cfg, paths)
    assert again["train"]["ares"]["QCM-A"]["resumed_from_step"] is None
    assert again["train"]["baseline"]["QCM-A"]["resumed_from_step"] == again["train"]["baseline"]["QCM-A"]["total_steps"]


def test_stage07_judges_every_comparison_and_says_what_each_win_rate_is(arms_run):
    cfg, paths, s = arms_run
    s7 = s["07_evaluation"]
    assert list(s7["comparisons"]) == ["ares_vs_baseline", "rl_only_vs_baseline", "correction_only_vs_baseline",
                                       "round_1_vs_baseline", "ares_vs_correction_only", "round_1_vs_correction_only"]
    n = s7["judged_problems"]
    for name, c in s7["comparisons"].items():
        assert c["wins"] + c["ties"] + c["losses"] == c["n"] == n
        assert c["tie_rate"] == pytest.approx(c["ties"] / n)
        assert name == f"{c['subject']}_vs_{c['reference']}"
        records = read_jsonl(paths.comparison_judgments_file(c["subject"], c["reference"]))
        assert [r["outcome"] for r in records].count("win") == c["wins"]
        assert all({c["subject"], c["reference"]} <= set(r) for r in records)
        lo, hi = c["win_rate_ci95"]
        assert lo <= c["win_rate"] <= hi
    headline = s7["comparisons"]["ares_vs_baseline"]
    assert (headline["wins"], headline["ties"], headline["losses"]) == tuple(
        s7["counts"][k] for k in ("wins", "ties", "losses"))
    assert s7["tie_rate"] == headline["tie_rate"] and s7["win_rate"] == headline["win_rate"]
    assert "names" not in read_jsonl(paths.judgments_file)[0]  # the headline's records as they always were
    assert set(s7["arms"]) == set(MODELS)
    for m in MODELS:
        q = s7["arms"][m]["degeneration"]
        assert {"mean_sentences", "words_per_sentence", "repeated_sentence_rate"} <= set(q)
        assert set(s7["arms"][m]["accuracy"]) == {"QCM-A", "QCMG-A"}
    table = pd.read_csv(s7["tables"]["comparisons"]["csv"])
    assert len(table) == len(s7["comparisons"]) and {"tie_rate", "decisive_win_rate", "win_rate"} <= set(table)
    assert set(s7["rationale_metrics"]) >= {"baseline", "round_1", "round_2", "rl_only", "correction_only"}


def test_the_report_shows_each_round_and_every_comparison(arms_run):
    cfg, paths, s = arms_run
    html = render_report(paths.run_dir)
    for stage in ("03", "04", "05"):
        section = html[html.index(f'id="stage-{stage}"'):]
        assert "round 2 of 2" in section[:400]  # the latest round, of two
    mirror = read_json(paths.summary_file("04_ppo"))
    assert set(mirror["rounds"]) == {"1", "2"} and mirror["latest_round"] == 2
    evaluation = html[html.index('id="stage-07"'):]
    assert "Every comparison" in evaluation and "ares vs correction_only" in evaluation
    assert "The models compared" in evaluation and "correction SFT only" in evaluation



def test_the_ablation_benchmark_reads_what_stages_06_and_07_summarised(arms_run):
    """benchmarks/ablation.py's per-problem arrays, read through stages.results.read_problem_outcomes
    (no run paths of its own), add up to the accuracies and win counts the stages wrote."""
    cfg, paths, s = arms_run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ablation

    data = ablation.run_data(paths.run_dir, ablation.EXACT)
    s6 = read_json(paths.summary_file("06_answer_lora"))  # read again: an earlier test re-ran stage 06
    s7 = s["07_evaluation"]["comparisons"]
    for arm, model in ablation.arm_models(ablation.EXACT).items():
        d = data[arm]
        assert 100 * d["qcm_a"].mean() == pytest.approx(s6["accuracy"][model]["QCM-A"]["Avg"])
        assert 100 * d["qcmg_a"].mean() == pytest.approx(s6["accuracy"][model]["QCMG-A"]["Avg"])
        assert len(d["sentences"]) == s["07_evaluation"]["test_problems"]
        for key, reference in (("vs_baseline", "baseline"), ("vs_correction_only", "correction_only")):
            c = s7.get(f"{model}_vs_{reference}")
            if d[key] is None:
                assert arm == "baseline" or (key == "vs_correction_only" and arm not in ablation.ARES_ARMS)
                continue
            assert (d[key]["win"].sum(), d[key]["tie"].sum(), d[key]["loss"].sum()) == (c["wins"], c["ties"], c["losses"])
            assert d[key]["forced"].mean() == pytest.approx(c["win_rate"])
    outcomes = read_problem_outcomes(paths)
    assert set(outcomes.correct) >= {(m, f) for m in MODELS for f in ("QCM-A", "QCMG-A")}
    assert outcomes.rationales["ares"] == rationale_file(paths.rationales_file("round_2", "test"))  # the last round's


def test_the_one_reader_keeps_an_arms_own_step_apart_from_the_round_it_copies(arms_run):
    """RunResults.summary(stage, arm=...) is the arm's own summary, not round 1's; the Teacher-usage
    benchmark, walking the manifest's steps, reads each step's own."""
    cfg, paths, s = arms_run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import llm_teacher_agreement

    schedule = build_schedule(2, ARMS)
    manifest = {"rounds": 2, "stages": {st.label: {"stage": st.stage, "round": st.round_index,
                                                   **({"arm": st.arm} if st.arm else {})} for st in schedule}}
    results = read_run(RunPaths.from_dir(paths.run_dir), rounds=2)
    results = dataclasses.replace(results, manifest=manifest)
    assert results.summary("05_correction_sft", arm=CORRECTION_ONLY) == s["correction_only/05_correction_sft"]
    assert results.summary("05_correction_sft", 1) == s["round_1/05_correction_sft"]
    usage = llm_teacher_agreement.teacher_usage(results)["per_stage"]
    for label in ("correction_only/05_correction_sft", "round_1/05_correction_sft", "round_2/05_correction_sft"):
        assert usage[label]["requests"] == s[label]["teacher"]["requests"]
        assert usage[label]["cache_hits"] == s[label]["teacher"]["cache_hits"]
