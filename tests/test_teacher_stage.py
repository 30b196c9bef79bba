"""Stage 03 plumbing with the local reference Teacher (rollouts stubbed: the generation itself is
the model helper's and is tested there), the samples.parquet contract and the score panel."""

import datasets
import pandas as pd
import pytest

from aresnb.config import load_config
from aresnb.io import read_json
from aresnb.paths import RunPaths
from conftest import sample_row, stub_sampling
from aresnb.present.widgets.score_panel import render_sample_html, score_colour
from aresnb.stages import teacher_scores as scoring_stage

COLUMNS = ["qid", "sample_index", "rationale", "sentences", "sentence_spans", "scores", "dropped", "drop_reason",
           "raw_reply"]


def _row(i):
    return dict(qid=f"q{i}", question=f"Which animal {i} is a mammal?", choices=["shark", "dog"], answer=1, hint="",
                image="", has_image=False, caption="", lecture="", solution="A dog feeds its young milk.",
                subject="natural science", grade="grade3", category="", topic="", skill="", task="", split="train",
                image_record="", features_zeroed=False)


@pytest.fixture
def run(tmp_path, monkeypatch):
    secret = "sk-STAGE03-CANARY-91ab"
    monkeypatch.setenv("ARESNB_TEACHER_KEY", secret)
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'outputs'}", "run.name=t03", "rollout.samples_per_problem=2",
                             "rollout.max_problems=6"])
    paths = RunPaths(cfg)
    datasets.DatasetDict(train=datasets.Dataset.from_list([_row(i) for i in range(10)])).save_to_disk(str(paths.dataset_dir))
    texts = ["A dog feeds its young milk. A dog feeds its young milk. So the answer is (B).", ""]

    monkeypatch.setattr(scoring_stage, "sampled_batches", stub_sampling(
        lambda problems: [sample_row(p["qid"], k, texts[k]) for p in problems for k in range(2)]))
    return cfg, paths, secret


def test_stage_writes_samples_and_summary_and_reruns_from_cache(run):
    cfg, paths, secret = run
    scoring_stage.run(cfg, paths, 1)
    result = scoring_stage.load(cfg, paths, 1)
    df = pd.read_parquet(paths.samples_file(1))
    assert list(df.columns[: len(COLUMNS)]) == COLUMNS and len(df) == 12
    full = df[df["sample_index"] == 0].iloc[0]
    assert list(full["scores"]) == [1.0, 0.0, 1.0] and [list(s) for s in full["sentence_spans"]][1] == [28, 55]
    empty = df[df["sample_index"] == 1].iloc[0]
    assert empty["dropped"] and empty["drop_reason"] == "empty_rationale" and empty["scores"] is None
    s = read_json(paths.summary_file("03_teacher_scores", 1))
    assert s == result.summary
    assert s["stage"] == "03_teacher_scores" and s["round"] == 1 and s["wall_time_s"] > 0
    assert s["samples"] == 12 and s["dropped_by_reason"] == {"empty_rationale": 6} and s["teacher"]["calls"] == 6
    assert s["score_histogram"]["1.0"] == 12 and s["score_histogram"]["0.0"] == 6
    assert abs(s["score_mean"] - 2 / 3) < 1e-9 and s["teacher"]["prompt_version"]
    assert result.problems["q0"]["question"].startswith("Which animal")
    # a re-run pays nothing: every reply comes from the cache
    again = scoring_stage.run(cfg, paths, 1)["teacher"]
    assert again["calls"] == 0 and again["cache_hits"] == 6
    # the run's cassette replays the stage exactly, offline, into an empty cache, with no server
    cassette = paths.teacher_dir / "cassette.jsonl"
    assert len(cassette.read_text().splitlines()) == 6
    replay_cfg = load_config(cfg.to_dict(), [f"teacher.cache_path={paths.run_dir / 'replay.sqlite'}",
                                             f"teacher.cassette={cassette}", "teacher.replay_only=true"])
    assert scoring_stage.run(replay_cfg, paths, 1)["teacher"]["calls"] == 0
    replay = scoring_stage.load(replay_cfg, paths, 1)
    assert replay.samples["raw_reply"].tolist() == result.samples["raw_reply"].tolist()
    # the key lives only in the environment
    for p in paths.run_dir.parent.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p


def test_select_problems_is_seeded():
    a = scoring_stage.select_problems(100, 10, seed=1)
    assert a == scoring_stage.select_problems(100, 10, seed=1) and a == sorted(a) and len(set(a)) == 10
    assert a != scoring_stage.select_problems(100, 10, seed=2)
    assert scoring_stage.select_problems(5, None, 0) == [0, 1, 2, 3, 4]


def test_score_panel_html():
    row = {"sentences": ["A <dog>.", "Sharks."], "scores": [1.0, 0.2], "raw_reply": '{"[1] A <dog>.": 1.0}',
           "dropped": False}
    html = render_sample_html(row, {"qid": "q1", "question": "Which?", "choices": ["shark", "dog"], "answer": 1})
    assert "A &lt;dog&gt;." in html and "1.0 / +0.5" in html and "0.2 / -0.3" in html and "answer (B)" in html
    assert score_colour(0.0) == "rgb(255,0,120)" and score_colour(1.0) == "rgb(0,255,120)"
    dropped = render_sample_html({"sentences": ["x"], "scores": None, "raw_reply": None, "dropped": True,
                                  "drop_reason": "invalid_reply"})
    assert "dropped: invalid_reply" in dropped and "—" in dropped


def test_scoring_starts_while_sampling_goes_on(run, monkeypatch):
    """The Teacher gets the first batch's requests before the second batch is sampled."""
    cfg, paths, _ = run
    from aresnb.teacher.facade import Teacher

    submitted: list[str] = []
    real_submit = Teacher.submit
    monkeypatch.setattr(Teacher, "submit", lambda self, item: submitted.append(item.problem.qid) or real_submit(self, item))
    seen_before_batch: list[int] = []

    def two_batches(run, problems, stats):
        stats.update(generation_s=0.0, reused_batches=0, sampled_batches=2, processes=1)
        half = len(problems) // 2
        for part in (problems[:half], problems[half:]):
            seen_before_batch.append(len(submitted))
            yield [sample_row(p["qid"], 0, "A dog feeds its young milk. So the answer is (B).") for p in part]

    monkeypatch.setattr(scoring_stage, "sampled_batches", two_batches)
    s = scoring_stage.run(cfg, paths, 1)
    assert seen_before_batch == [0, 3]  # the 3 requests of batch 1 were out before batch 2 was made
    assert s["samples"] == 6 and s["scoring_s"] > 0 and s["rollout_batches"] == {"reused": 0, "sampled": 2}
