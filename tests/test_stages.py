"""Every stage module's ``run`` (01-07) on a tiny run, in pipeline order: 12 train problems, models
of a few thousand weights, one pass of everything, one local reference Teacher for the stages that
call it. Each test checks what its stage must account for on any machine; a stage's fixture runs it
once. The notebooks and the full-size embedded default are test_pipeline.py's (slow)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from aresnb.config import load_config
from aresnb.io import read_json, read_jsonl
from aresnb.model.multimodal_t5 import load_rationale_model
from aresnb.model.tokenizer import load_tokenizer
from aresnb.paths import RunPaths
from aresnb.rl.ppo import METRIC_NAMES
from aresnb.stages import answer_lora, baseline, correction_sft, data, evaluation, ppo, teacher_scores
from aresnb.stages.driver import load_problems
from aresnb.teacher import start_local_server

from conftest import BagOfWords

N_TRAIN, N_VAL, N_TEST = 12, 4, 4
K, ROLLOUT_PROBLEMS, CORRECTED = 2, 6, 6
TINY = [
    f"data.synthetic.n_train={N_TRAIN}", f"data.synthetic.n_val={N_VAL}", f"data.synthetic.n_test={N_TEST}",
    "features.tiny_hidden_size=16", "features.tiny_layers=1",
    "model.vocab_size=300", "model.d_model=32", "model.d_ff=64", "model.d_kv=8", "model.num_heads=2",
    "model.num_layers=1", "model.num_decoder_layers=1", "model.max_target_length=48",
    "baseline.epochs=4", "baseline.batch_size=6", "baseline.gen_max_new_tokens=16",
    f"rollout.samples_per_problem={K}", f"rollout.max_problems={ROLLOUT_PROBLEMS}", "rollout.max_new_tokens=16",
    "ppo.batch_size=4", "ppo.micro_batch_size=2", "ppo.ppo_epochs=2", "ppo.lr=1e-3", "ppo.eval_max_new_tokens=16",
    f"correction.max_problems={CORRECTED}", "correction.max_new_tokens=16", "correction.sft.epochs=1",
    "correction.sft.batch_size=6",
    "answer.r=2", "answer.alpha=4", "answer.train.epochs=1", "answer.train.batch_size=12", "answer.max_new_tokens=10",
    "evaluation.bootstrap_samples=50",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = load_config(None, [f"run.output_dir={out}", "run.name=tiny", f"teacher.cache_path={out / 'cache.sqlite'}",
                             *TINY])
    return cfg, RunPaths(cfg)


@pytest.fixture(scope="module")
def stage01(run):
    return data.run(*run)


@pytest.fixture(scope="module")
def teacher_cfg(run, stage01):
    """The run's parameters pointed at one local reference Teacher (started once, not per stage)."""
    cfg, paths = run
    with start_local_server(paths.dataset_dir) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARESNB_TINY_KEY", "tiny-key")
        yield load_config(cfg.to_dict(), ["teacher.serve_local=false", f"teacher.base_url={server.base_url}",
                                          "teacher.api_key_env=ARESNB_TINY_KEY"])


@pytest.fixture(scope="module")
def stage02(run, stage01):
    return baseline.run(*run)


@pytest.fixture(scope="module")
def stage03(run, teacher_cfg, stage02):
    return teacher_scores.run(teacher_cfg, run[1], 1)


@pytest.fixture(scope="module")
def stage04(run, teacher_cfg, stage03):
    return ppo.run(teacher_cfg, run[1], 1, log=lambda line: None)


@pytest.fixture(scope="module")
def stage05(run, teacher_cfg, stage04):
    return correction_sft.run(teacher_cfg, run[1], 1)


@pytest.fixture(scope="module")
def stage06(run, stage05):
    return answer_lora.run(*run)


@pytest.fixture(scope="module")
def stage07(run, teacher_cfg, stage06):
    # MiniLM's loading is test_evaluation.py's; a stand-in encoder keeps this quick
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluation, "load_similarity_model", lambda name: (BagOfWords(), "bag-of-words stand-in"))
        return evaluation.run(teacher_cfg, run[1])


def _qids(paths, split):
    return load_problems(paths)[split]["qid"]


def test_01_data_writes_every_split_with_its_features(run, stage01):
    cfg, paths = run
    s = stage01
    assert s["problems"] == {"train": N_TRAIN, "val": N_VAL, "test": N_TEST}
    for split, n in s["problems"].items():
        feats = np.load(paths.features_file(split))
        has = np.array(load_problems(paths)[split]["has_image"])
        assert feats.shape == (n, *s["feature_shape"]) and not feats[~has].any() and all(f.any() for f in feats[has])
    assert s["feature_cache"]["computed"] + s["feature_cache"]["cache_hits"] == sum(s["images"].values())
    assert data.load(cfg, paths).summary == s


def test_02_baseline_trains_its_steps_and_writes_a_rationale_per_problem(run, stage02):
    cfg, paths = run
    t = stage02["train"]
    assert t["steps"] == t["total_steps"] == math.ceil(cfg.baseline.epochs * math.ceil(N_TRAIN / cfg.baseline.batch_size))
    assert [r["step"] for r in read_jsonl(paths.metrics_file("02_baseline"))][-1] == t["steps"]
    assert load_rationale_model(paths.baseline_model_dir) is not None
    for split in ("val", "test"):
        rows = read_jsonl(paths.rationales_file("baseline", split))
        assert [r["qid"] for r in rows] == _qids(paths, split)
        assert all(not r["rationale"].startswith("Solution:") for r in rows)
    assert 0.0 <= stage02["val"]["token_accuracy"] <= 1.0 and stage02["val"]["teacher_forced_loss"] > 0
    assert baseline.load(cfg, paths).summary == stage02


def test_03_every_sample_is_scored_or_dropped_with_a_reason(run, stage03):
    _, paths = run
    s = stage03
    df = pd.read_parquet(paths.samples_file(1))
    eos = load_tokenizer(paths.baseline_model_dir).eos_token_id
    assert len(df) == s["samples"] == ROLLOUT_PROBLEMS * K and df.groupby("qid").size().eq(K).all()
    assert s["scored"] + s["dropped"] == s["samples"] and sum(s["dropped_by_reason"].values()) == s["dropped"]
    for r in df.itertuples():
        assert (not r.dropped and len(r.scores) == len(r.sentences) and all(0 <= x <= 1 for x in r.scores)) or \
               (r.dropped and r.scores is None and r.drop_reason)
        assert len(r.sentence_end_tokens) == len(r.sentences) and all(0 <= e < len(r.response_ids) for e in r.sentence_end_tokens)
        assert len(r.sample_logprobs) == len(r.response_ids) and r.ended == (r.response_ids[-1] == eos)
    assert sum(s["score_histogram"].values()) == s["sentences"] == sum(len(x) for x in df.loc[~df["dropped"], "scores"])
    assert s["teacher"]["requests"] == s["teacher"]["calls"] + s["teacher"]["cache_hits"] and not s["teacher"]["errors"]


def test_04_ppo_trains_every_kept_sample_for_the_planned_passes(run, teacher_cfg, stage04):
    cfg, paths = run
    s = stage04
    kept = s["samples_total"] - s["samples_dropped"]
    assert s["samples_total"] == ROLLOUT_PROBLEMS * K and s["sequences_trained"] == kept
    assert s["passes"] == cfg.ppo.ppo_epochs and s["optimizer_steps"] == s["expected_optimizer_steps"] == \
        cfg.ppo.ppo_epochs * math.ceil(kept / cfg.ppo.batch_size)
    rows = read_jsonl(paths.metrics_file("04_ppo", 1))
    assert [r["step"] for r in rows] == list(range(1, s["optimizer_steps"] + 1))
    assert all(set(r) == set(METRIC_NAMES) for r in rows)
    assert s["sampling_logprob_gap"] < 1e-3  # stage 03's sampled ids and stage 04's log-probs line up
    assert s["eval_problems"] == N_VAL and s["eval_empty_before"] + s["eval_unscored_before"] <= N_VAL
    moved = load_rationale_model(paths.ppo_policy_dir(1)).state_dict()
    entering = load_rationale_model(paths.baseline_model_dir).state_dict()
    assert any(not torch.equal(moved[k], entering[k]) for k in entering)
    assert ppo.load(teacher_cfg, paths, 1).examples.shape[0] == N_VAL


def test_05_every_rationale_is_corrected_unchanged_or_kept(run, teacher_cfg, stage05):
    _, paths = run
    s = stage05
    assert s["corrected"] + s["unchanged"] + s["fallback"] == s["n_problems"] == CORRECTED
    df = pd.read_parquet(paths.corrections_file(1))
    assert len(df) == CORRECTED and df["qid"].is_unique and set(df["status"]) <= {"corrected", "unchanged", "fallback"}
    assert s["sft"]["steps"] == s["sft"]["total_steps"] > 0 and (paths.sft_model_dir(1) / "config.json").exists()
    for split in ("val", "test"):
        assert [r["qid"] for r in read_jsonl(paths.rationales_file("round_1", split))] == _qids(paths, split)
    for point in ("before_rl", "after_rl", "after_sft"):
        rates = s["val_rates"][point]
        assert all(0.0 <= rates[k] <= 1.0 for k in ("empty_rate", "repeated_sentence_rate"))
    assert len(correction_sft.load(teacher_cfg, paths, 1).corrections) == CORRECTED


def test_06_every_head_answers_every_test_problem(run, stage06):
    cfg, paths = run
    s = stage06
    assert set(s["accuracy"]) == {"baseline", "ares"} and all(set(h) == set(cfg.answer.formats) for h in s["accuracy"].values())
    for model, heads in s["accuracy"].items():
        for fmt, acc in heads.items():
            assert 0.0 <= acc["Avg"] <= 100.0
            rows = read_jsonl(paths.answer_dir(model, fmt) / "predictions_test.jsonl")
            assert [r["qid"] for r in rows] == _qids(paths, "test")
            assert sum(not r["extracted"] for r in rows) == s["extraction_failures"][model][fmt]
    ab = s["image_ablation"]
    assert 0.0 <= ab["accuracy_without_image"] <= 100.0 and ab["accuracy_with_image"] == s["accuracy"]["baseline"]["QCM-A"]["Avg"]
    assert (paths.tables_dir / "accuracy_by_category.csv").exists()
    assert answer_lora.load(cfg, paths).summary == read_json(paths.summary_file("06_answer_lora"))


def test_07_every_test_problem_is_judged(run, stage07):
    _, paths = run
    s = stage07
    c = s["counts"]
    assert c["wins"] + c["ties"] + c["losses"] == c["n"] == N_TEST == s["test_problems"]
    assert s["single_order"]["ares"] + s["single_order"]["baseline"] + s["single_order"]["tie_or_invalid"] == N_TEST
    lo, hi = s["win_rate_ci95"]
    assert 0.0 <= lo <= s["win_rate"] <= hi <= 1.0
    assert [r["qid"] for r in read_jsonl(paths.judgments_file)] == _qids(paths, "test")
    assert {"baseline/QCM-A", "ares/QCM-A"} <= set(s["accuracy"])
    for name in ("win_rate", "rationale_metrics", "accuracy_evaluation"):
        assert (paths.tables_dir / f"{name}.csv").exists()
