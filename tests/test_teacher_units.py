"""Teacher pieces without a server: prompts, reply validation, the cache and cassettes, the
reference Teacher's rules, the retry delay."""

import json
import random
import statistics
import subprocess
import sys

import httpx
import openai
import pytest

from aresnb.teacher import ProblemView, ReplyCache, prompts
from aresnb.teacher.cache import cache_key, request_record
from aresnb.teacher.client import AsyncTeacher, _retry_after
from aresnb.teacher.endpoints import at_url
from aresnb.teacher.reference import ReferenceTeacher
from aresnb.teacher.validation import InvalidReply, parse_correction, parse_judgement, parse_scores

PROBLEM = ProblemView(qid="q1", question="Which animal is a mammal?", choices=("shark", "dog"), answer=1,
                      hint="Mammals feed their young milk.", solution="A dog feeds its young milk. A shark is a fish.")
SENTS = ["Mammals feed their young milk.", "A dog is a mammal.", "A dog is a mammal."]
KEYS = list(prompts.sentences_object(SENTS))


def test_score_prompt_sends_sentences_as_json_with_placeholders():
    msgs = prompts.score_messages(PROBLEM, SENTS)
    user = msgs[1]["content"]
    obj = json.loads(user.split("Sentences to score (JSON): ", 1)[1])
    assert list(obj) == KEYS and set(obj.values()) == {prompts.SCORE_PLACEHOLDER}
    assert "Correct answer: (B) dog" in user and prompts.request_kind(msgs) == "score"
    fields = prompts.parse_request(msgs)
    assert fields["sentences"] == SENTS and fields["question"] == PROBLEM.question
    assert prompts.PROMPT_VERSION in prompts.prompt_preview("judge")


def test_vision_messages_carry_a_data_url(tmp_path):
    img = tmp_path / "image.png"
    img.write_bytes(b"\x89PNG fake")
    p = ProblemView(**{**PROBLEM.__dict__, "image": str(img)})
    msgs = prompts.score_messages(p, SENTS, p.image_data_url())
    assert msgs[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert prompts.parse_request(msgs)["sentences"] == SENTS


@pytest.mark.parametrize("reply,expected", [
    ('{"[1] a": 0.46, "[2] b": 1, "[3] c": "0.04"}', [0.5, 1.0, 0.0]),
    ('```json\n{"[1] a": 0.3, "[2] b": 0.7, "[3] c": 0.0}\n```', [0.3, 0.7, 0.0]),
    ('{"x": 0.2, "y": 0.8, "z": 0.5}', [0.2, 0.8, 0.5]),  # keys edited: taken in reply order
])
def test_parse_scores_accepts(reply, expected):
    assert parse_scores(reply, ["[1] a", "[2] b", "[3] c"]) == expected


@pytest.mark.parametrize("reply,why", [
    ('{"[1] a": 0.5, "[2] b": 0.5}', "expected 3 scores"),
    ('{"[1] a": 0.5, "[2] b": 1.2, "[3] c": 0}', r"outside \[0, 1\]"),
    ('{"[1] a": -0.1, "[2] b": 1, "[3] c": 0}', r"outside \[0, 1\]"),
    ('{"[1] a": "high", "[2] b": 1, "[3] c": 0}', "not a number"),
    ('{"[1] a": true, "[2] b": 1, "[3] c": 0}', "boolean"),
    ('{"[1] a": null, "[2] b": 1, "[3] c": 0}', "not a number"),
    ('[0.5, 0.5, 0.5]', "expected a JSON object"),
    ('Here are the scores: {"[1] a": 0.5}', "not valid JSON"),
    ('{"[1] a": 0.5, "[2] b"', "not valid JSON"),
    ("", "empty"),
    (None, "empty"),
])
def test_parse_scores_rejects(reply, why):
    with pytest.raises(InvalidReply, match=why):
        parse_scores(reply, ["[1] a", "[2] b", "[3] c"])


def test_parse_correction_and_judgement():
    assert parse_correction('{"corrected_rationale": " A dog is a mammal. "}') == "A dog is a mammal."
    for bad in ('{"corrected_rationale": ""}', '{"text": "x"}', "A dog is a mammal."):
        with pytest.raises(InvalidReply):
            parse_correction(bad)
    assert [parse_judgement(f'{{"better": "{c}"}}') for c in ("A", "b", "Tie")] == ["A", "B", "tie"]
    with pytest.raises(InvalidReply):
        parse_judgement('{"better": "C"}')


def test_cache_key_covers_model_prompt_image_and_temperature():
    msgs = prompts.score_messages(PROBLEM, SENTS)
    base = cache_key(request_record("m", "v1", msgs, 0.0))
    assert base == cache_key(request_record("m", "v1", json.loads(json.dumps(msgs)), 0.0))
    assert base != cache_key(request_record("m2", "v1", msgs, 0.0))
    assert base != cache_key(request_record("m", "v2", msgs, 0.0))
    assert base != cache_key(request_record("m", "v1", msgs, 0.7))
    img1 = prompts.score_messages(PROBLEM, SENTS, "data:image/png;base64,AAAA")
    img2 = prompts.score_messages(PROBLEM, SENTS, "data:image/png;base64,AAAB")
    r1 = request_record("m", "v1", img1, 0.0)
    assert cache_key(r1) != cache_key(request_record("m", "v1", img2, 0.0))
    assert "base64" not in json.dumps(r1)  # the image is stored as its hash


def test_cache_and_cassette_round_trip(tmp_path):
    a = ReplyCache(tmp_path / "a.sqlite")
    for i in range(5):
        rec = request_record("m", "v1", prompts.score_messages(PROBLEM, SENTS[: i % 3 + 1] + [str(i)]), 0.0)
        a.put(cache_key(rec), rec, "score", f'{{"reply": {i}}}', {"prompt_tokens": i, "completion_tokens": 1})
    assert len(a) == 5
    a.put(cache_key(rec), rec, "score", "a second reply", {})  # the first reply for a key wins
    assert a.get(cache_key(rec))["reply"] == '{"reply": 4}'
    assert a.export(tmp_path / "run.cassette.jsonl") == 5
    b = ReplyCache(tmp_path / "b.sqlite")
    assert b.import_(tmp_path / "run.cassette.jsonl") == 5
    assert list(a.rows()) == list(b.rows())
    assert b.import_(tmp_path / "run.cassette.jsonl") == 0  # idempotent
    lines = (tmp_path / "run.cassette.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["request"]["temperature"] = 1.0
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: key does not match"):
        ReplyCache(tmp_path / "c.sqlite").import_(tmp_path / "bad.jsonl")
    assert a._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reference_teacher_rules():
    ref = ReferenceTeacher([PROBLEM])
    # real data: overlap with the gold solution; the repeat gets 0.0
    scores = ref.sentence_scores(PROBLEM, ["A dog feeds its young milk.", "The sky is cloudy today.",
                                           "A dog feeds its young milk.", "The answer is (A)."])
    assert scores[0] >= 0.9 and scores[1] <= 0.3 and scores[2] == 0.0 and scores[3] == 0.0
    # the reply to our own prompt is valid and uses the same keys
    reply = ref.reply(prompts.score_messages(PROBLEM, SENTS))
    assert parse_scores(reply, KEYS)[2] == 0.0
    fixed = ref.correct(PROBLEM, "A dog dog feeds its young milk. The answer is (A). A dog feeds its young milk. It")
    assert fixed == "A dog feeds its young milk. A shark is a fish."
    assert ref.judge(PROBLEM, "A dog feeds its young milk.", "The answer is (A).") == "A"
    assert ref.judge(PROBLEM, "The answer is (A).", "A dog feeds its young milk.") == "B"
    assert ref.judge(PROBLEM, "x.", "x.") == "A"  # a forced choice: equals go to Option A


def test_reference_teacher_synthetic_relevance():
    record = {"kind": "image", "facts": {"shape": "circle", "colour": "red", "count": 1}, "refs": ["image", "shape"],
              "choices": ["blue", "red"], "answer": "red", "answer_letter": "B",
              "neutral": ["colours are everywhere"]}  # as the synthetic grader records it
    p = ProblemView(qid="s1", question="What colour is the circle?", choices=("blue", "red"), answer=1,
                    image_record=json.dumps(record), solution="The circle is red. So the answer is red.")
    ref = ReferenceTeacher([p])
    about_answer, indirect, neutral, noise, false = ref.sentence_scores(
        p, ["The circle is red.", "There is one circle.", "Colours are everywhere.", "Circles.", "The circle is blue."])
    assert about_answer > indirect > neutral > noise > false and neutral == 0.5 and false == 0.0


def _backoff(base_s=0.5, max_s=4.0, seed=0) -> AsyncTeacher:
    """A client with only what its retry delay reads (no event loop, no HTTP client)."""
    t = AsyncTeacher.__new__(AsyncTeacher)
    t.s = at_url(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", backoff_base_s=base_s,
                          backoff_max_s=max_s)
    t.rng = random.Random(seed)
    return t


def test_retry_delay_doubles_each_attempt_with_full_jitter_up_to_the_cap():
    t = _backoff(base_s=0.5, max_s=4.0)
    for attempt, bound in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):  # min(cap, base * 2^attempt)
        delays = [t._delay(attempt, None) for _ in range(400)]
        assert 0.0 <= min(delays) < 0.05 * bound  # full jitter reaches down to zero
        assert 0.95 * bound < max(delays) <= bound  # ... and up to the attempt's bound, never above
        assert 0.4 * bound < statistics.fmean(delays) < 0.6 * bound  # uniform: half the bound on average


def test_retry_after_is_a_floor_of_the_delay_up_to_ten_minutes():
    t = _backoff(base_s=0.5, max_s=4.0)
    assert {t._delay(0, 2.5) for _ in range(50)} == {2.5}  # above the jitter's bound (0.5): exactly it
    delays = [t._delay(3, 0.1) for _ in range(200)]  # below the bound (4.0): jitter above the floor
    assert min(delays) == 0.1 and max(delays) > 3.5
    assert t._delay(0, 86_400.0) == 600.0  # a server asking for a day is not waited on for a day


def _rate_limited(headers: dict) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    return openai.RateLimitError("rate limited", response=httpx.Response(429, headers=headers, request=request),
                                 body=None)


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "2.5"}, 2.5),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"retry-after-ms": "200", "retry-after": "9"}, 0.2),  # the finer header wins
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # an HTTP date: our own backoff decides
    ({}, None),
])
def test_retry_after_header_parsing(headers, seconds):
    assert _retry_after(_rate_limited(headers)) == seconds


def test_an_error_without_a_response_has_no_retry_after():
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    assert _retry_after(openai.APIConnectionError(request=request)) is None


def test_teacher_package_does_not_import_torch():
    code = ("import sys, aresnb.teacher, aresnb.teacher.server, aresnb.teacher.reference, aresnb.teacher.llm, "
            "aresnb.teacher.cache_cli, aresnb.teacher.limits, aresnb.text.sentences; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unreachable_endpoint_fails_clearly(tmp_path):
    from aresnb.teacher import ScoreItem, Teacher, TeacherUnreachable

    s = at_url(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", max_retries=1,
                        backoff_base_s=0.01, timeout_s=2.0)
    with Teacher(s, ReplyCache(tmp_path / "c.sqlite")) as t:
        with pytest.raises(TeacherUnreachable, match="cannot reach the Teacher at http://127.0.0.1:9/v1"):
            t.score_sentences([ScoreItem(PROBLEM, SENTS)])
