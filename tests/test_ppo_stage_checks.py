"""Stage 04's own rules on crafted inputs: an empty rationale scores 0 in the held-out measure (saying
nothing cannot raise the score), and the two loud warnings -- collapse towards empty rationales and
sentence merging (RL running sentences together) -- fire when, and only when, they should."""

from types import SimpleNamespace

import pytest

from aresnb.config import load_config
from aresnb.paths import RunPaths
from aresnb.stages import ppo as stage04
from aresnb.text.rationale_metrics import rationale_quality


def _eval(texts):
    return {"teacher_score": 0.5, "empty": sum(not t for t in texts), "dropped": 0, "quality": rationale_quality(texts),
            "rows": [{"qid": f"q{i}", "rationale": t, "score": 0.5} for i, t in enumerate(texts)]}


RESULT = {"buffer": {"samples_total": 8, "samples_dropped": 0}, "sequences": 8, "passes": 1, "optimizer_steps": 2,
          "kl_by_pass": [], "sampling_logprob_gap": 0.0, "resumed_from_step": None, "processes": 1,
          "value_warmup_loss": []}


@pytest.fixture()
def summarize(tmp_path):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "evaluation.bootstrap_samples=20"])
    paths = RunPaths(cfg)
    lines = []

    def make(before, after):
        s = stage04.stage_summary(cfg, paths, 1, _eval(before), _eval(after), RESULT, {}, lines.append)
        return s, list(lines)
    return make


FOUR = "The cup is red. The box is blue. Red is warm. So the answer is red."


def test_sentence_merging_warns_when_a_third_of_the_sentences_go(summarize):
    merged = "The cup is red and the box is blue and red is warm so the answer is red."
    s, lines = summarize([FOUR] * 4, [merged] * 4)
    assert s["sentence_merge_warning"] and s["sentences_per_rationale"] == {"before_rl": 4.0, "after_rl": 1.0}
    assert s["words_per_sentence"]["after_rl"] > 3 * s["words_per_sentence"]["before_rl"] > 0
    assert any("runs sentences together" in line for line in lines) and not s["collapse_warning"]


def test_no_warning_for_a_policy_that_keeps_its_sentences(summarize):
    three = "The cup is red. The box is blue. So the answer is red."  # 4 -> 3: a quarter fewer, not a third
    s, lines = summarize([FOUR] * 4, [three] * 4)
    assert not s["sentence_merge_warning"] and not s["collapse_warning"] and not lines


def test_collapse_warns_on_empty_rationales(summarize):
    s, lines = summarize([FOUR] * 10, [FOUR] * 8 + ["", ""])  # 0% -> 20% empty: above 10 points
    assert s["collapse_warning"] and any("collapsed towards empty" in line for line in lines)


def test_an_empty_rationale_scores_zero_in_the_held_out_measure(monkeypatch):
    rows = [{"qid": "q1", "rationale": ""}, {"qid": "q2", "rationale": "The cup is red."}]
    monkeypatch.setattr(stage04, "generate_rationales", lambda *a, **k: rows)
    asked = []

    class Teacher:
        def score_sentences(self, items):
            asked.extend(items)
            return [SimpleNamespace(dropped=False, scores=[0.8]) for _ in items]

    cfg = load_config(None)
    problems = [{"qid": "q1", "question": "?", "choices": ["a", "b"], "answer": 0},
                {"qid": "q2", "question": "?", "choices": ["a", "b"], "answer": 0}]
    monkeypatch.setattr(stage04.ProblemView, "from_row", staticmethod(lambda p: p))
    out = stage04.score_greedy_rationales(SimpleNamespace(eval=lambda: None), None, problems, None, Teacher(), cfg)
    assert len(asked) == 1  # nothing to ask about an empty rationale
    assert [r["score"] for r in out["rows"]] == [0.0, 0.8] and out["empty"] == 1
    assert out["teacher_score"] == pytest.approx(0.4)  # the empty one counts, as 0
