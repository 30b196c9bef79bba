"""`aresnb results`: the effect table says which outcomes failed, and only the marked README section changes."""

import json

import pytest

from aresnb.present.results_table import END, START, effect_table, update_readme


def _effect(passes):
    return {"seeds": [0, 1, 2], "wall_time_s": 600.0,
            "verdicts": [{"outcome": f"outcome {i}", "pass": p, "detail": f"figure {i}"} for i, p in enumerate(passes)]}


def test_effect_table_marks_every_failed_outcome():
    table = effect_table(_effect([True, False, False]))
    rows = [line for line in table.splitlines() if line.startswith("| outcome ") and "reached" not in line]
    assert rows == ["| outcome 0 | yes | figure 0 |", "| outcome 1 | **no** | figure 1 |",
                    "| outcome 2 | **no** | figure 2 |"]
    assert "Seeds 0, 1, 2; 10.0 min" in table


def test_update_readme_replaces_only_the_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{START}\nold\n{END}\n## next\nkept $1 \\1\n")
    update_readme(readme, "new table with \\1 and $1")
    assert readme.read_text() == f"# title\n{START}\nnew table with \\1 and $1\n{END}\n## next\nkept $1 \\1\n"


def test_update_readme_without_markers_is_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results:start"):
        update_readme(readme, "x")
    assert readme.read_text() == "# no markers\n"


def test_ppo_speed_table_reads_the_ratios_of_every_shape(tmp_path):
    from aresnb.present.results_table import ppo_speed_table

    assert ppo_speed_table(tmp_path) is None
    side = {"sequences_per_s": 10.0}
    for name, shared in (("tiny", 1.25), ("small", 2.5)):
        (tmp_path / f"ppo_throughput_{name}.json").write_text(json.dumps({
            "shape": {"name": name}, "ratios": {"shared_vs_trl": shared, "separate_vs_trl": 0.5},
            "results": {"ours_shared": side, "ours_separate": side, "trl": side},
            "machine": {"cpus": 2, "processor": "x86_64"}, "load_average_1_5_15min": {"start": [1.0, 1.0, 1.0]}}))
    rows = ppo_speed_table(tmp_path).splitlines()[2:]
    assert [r.split(" | ")[:3] for r in rows] == [["| small", "2.50x", "0.50x"], ["| tiny", "1.25x", "0.50x"]]


def test_teacher_speed_table_has_a_row_per_concurrency_and_limit(tmp_path):
    from aresnb.present.results_table import teacher_speed_table

    level = {"requests_per_s": 4.5, "ideal_requests_per_s": 5.0, "ratio": 0.9, "cached_rerun_api_calls": 0}
    (tmp_path / "teacher_throughput.json").write_text(json.dumps({
        "latency_ms": 200, "levels": [{**level, "concurrency": c} for c in (1, 8)],
        "rate_limits": [{"limit": "max_requests_per_minute", "limit_per_minute": 1200, "achieved_per_minute": 1230,
                         "ratio": 1.025},
                        {"limit": "max_tokens_per_minute", "limit_per_minute": 240000, "achieved_per_minute": 239000,
                         "ratio": 0.996, "window_s": 60.0, "busiest_window_sent": 240000, "busiest_window_ratio": 1.0}]}))
    rows = teacher_speed_table(tmp_path).splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| concurrency 1", "| concurrency 8", "| `teacher.max_requests_per_minute` 1,200",
                                                 "| `teacher.max_tokens_per_minute` 240,000"]
    assert "1.025" in rows[-2] and "busiest" not in rows[-2]  # written before the window was measured
    assert "239,000 per min; busiest 60 s: 240,000 (1.000)" in rows[-1]


def test_llm_teacher_table_says_when_the_correlation_is_undefined(tmp_path):
    from aresnb.present.results_table import llm_teacher_table

    assert llm_teacher_table(tmp_path) is None
    (tmp_path / "llm_teacher_agreement.json").write_text(json.dumps({
        "teacher_model": "Tiny-LLM", "all_stages_done": True, "stage_wall_time_s": 700.4,
        "teacher_usage": {"total": {"requests": 56, "invalid_replies": 2}},
        "agreement_with_reference_stage03": {
            "sentences": 58, "pearson": None, "spearman": None, "mean_abs_difference": 0.669, "reward_sign_agreement": 0.31,
            "run_teacher": {"mean": 1.0, "std": 0.0, "distinct_scores": [1.0]},
            "reference_teacher": {"mean": 0.33, "std": 0.41, "distinct_scores": [0.0, 1.0]}}}))
    rows = dict([c.strip() for c in r.strip().strip("|").split("|")] for r in llm_teacher_table(tmp_path).splitlines()[2:])
    assert rows["stage time"] == "700 s" and rows["Teacher and judge requests"] == "56 (2 invalid replies)"
    assert rows["Pearson / Spearman with the reference"] == "undefined / undefined"
    assert rows["same reward sign (score vs 0.5)"] == "31%"
