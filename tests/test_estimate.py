"""`aresnb estimate`: requests, tokens, images, USD and wall time per stage, before any call."""

import subprocess
import sys

import pytest

from aresnb.config import load_config
from aresnb.data.registry import find
from aresnb.pipeline.estimate import estimate, format_table
from aresnb.teacher.limits import cost_usd
from conftest import SMOKE_TEST_SET


def _by_stage(result):
    return {r.stage: r for r in result["rows"]}


def test_smoke_counts_follow_the_parameters_and_the_synthetic_data():
    cfg = load_config(None, [*SMOKE_TEST_SET, "teacher.price_input_per_mtok=1.0", "teacher.price_output_per_mtok=2.0",
                             "teacher.image_tokens=100", "teacher.concurrency=4", "teacher.assumed_latency_s=1.0"])
    result = estimate(cfg)
    rows = _by_stage(result)
    assert result["data"].startswith("the synthetic generator")
    # SMOKE_TEST_SET: 160 train problems x 4 samples; 48 val x 2 (before/after PPO); 80 corrections; 48 test x 2 orders
    assert [rows[s].requests for s in ("03_teacher_scores", "04_ppo", "05_correction_sft", "07_evaluation")] == \
        [640, 96, 80, 96]
    r03 = rows["03_teacher_scores"]
    assert 0 < r03.images < r03.requests  # some synthetic problems have an image, not all
    assert r03.prompt_tokens > 100 * r03.images and r03.completion_tokens > 0
    assert r03.cost_usd == pytest.approx(cost_usd(r03.prompt_tokens, r03.completion_tokens, 1.0, 2.0))
    assert r03.wall_s == pytest.approx(640 * 1.0 / 4)
    assert result["total"].requests == 640 + 96 + 80 + 96
    assert result["total"].cost_usd == pytest.approx(sum(r.cost_usd for r in result["rows"]))
    # images cost prompt tokens only when the Teacher is sent them
    no_vision = _by_stage(estimate(load_config(cfg, ["teacher.vision=false"])))["03_teacher_scores"]
    assert no_vision.images == 0 and no_vision.prompt_tokens < r03.prompt_tokens


def test_rounds_limits_and_the_judges_own_prices():
    cfg = load_config(None, ["ares.rounds=2", "rollout.max_problems=10", "evaluation.max_judge_problems=5",
                             "teacher.max_requests_per_minute=60", "evaluation.judge.model=gpt-4o",
                             "evaluation.judge.price_input_per_mtok=5.0"])
    rows = estimate(cfg)["rows"]
    assert [(r.stage, r.round) for r in rows] == [("03_teacher_scores", 1), ("04_ppo", 1), ("05_correction_sft", 1),
                                                   ("03_teacher_scores", 2), ("04_ppo", 2), ("05_correction_sft", 2),
                                                   ("07_evaluation", None)]
    assert rows[0].requests == 40 and rows[-1].requests == 10 and rows[-1].model == "gpt-4o"
    assert rows[0].cost_usd == 0 and rows[-1].cost_usd > 0
    assert rows[0].wall_s == pytest.approx(40.0)  # 60 a minute: the rate limit, not the latency, decides


def test_local_scienceqa_folder_is_read(shared_dir):
    cfg = load_config("params/scienceqa_base.yaml", [f"data.path={shared_dir / 'data' / 'scienceqa-mini'}"])
    result = estimate(cfg)
    rows = _by_stage(result)
    assert "scienceqa folder" in result["data"]
    assert rows["03_teacher_scores"].requests == 50 * 4 and rows["07_evaluation"].requests == 50 * 2
    assert rows["03_teacher_scores"].images == 0  # the sample ships test images only (train ones are missing)
    assert rows["07_evaluation"].images == 24 * 2 and rows["07_evaluation"].model == "gpt-4o"


def test_unreadable_data_falls_back_to_documented_lengths_and_prints_the_table():
    cfg = load_config("params/scienceqa_base.yaml", ["data.path=/nonexistent/ScienceQA"])
    result = estimate(cfg)
    assert result["data"].startswith("fallback lengths")
    assert _by_stage(result)["03_teacher_scores"].requests == find("scienceqa").fallback.splits["train"] * 4
    table = format_table(result)
    for text in ("03_teacher_scores", "07_evaluation", "requests", "prompt tok", "USD", "total", "claude-3-haiku",
                 "gpt-4o", "teacher.max_cost_usd: none"):
        assert text in table
    capped = format_table(estimate(load_config(cfg, ["teacher.max_cost_usd=1.0"])))
    assert "teacher.max_cost_usd: 1.00 (the estimate EXCEEDS it by" in capped


def test_cli_prints_the_table_without_calling_anything():
    out = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "estimate", "params/scienceqa_base.yaml",
                          "--set", "data.path=/nonexistent"], capture_output=True, text=True, check=True).stdout
    assert "03_teacher_scores" in out and "total" in out
