"""Structured outputs, the 400 fallback, the validated-only answer cache, the budget stop, the
stream API and the judge's own endpoint, against the local server (faults by request index:
deterministic, no timing)."""

import dataclasses
import json
import logging
from types import SimpleNamespace

import datasets
import pytest

from aresnb.config import ConfigError, load_config
from aresnb.paths import RunPaths
from aresnb.teacher import (BudgetExceeded, CorrectionItem, JudgeItem, ProblemView, ReplyCache, ScoreItem, Teacher,
                            open_teacher, prompts, start_local_server)
from aresnb.teacher.cache import cache_key, request_record
from aresnb.teacher.cache_cli import purge_invalid
from aresnb.teacher.endpoints import at_url, endpoint
from aresnb.teacher.facade import api_key

SENTS = ["A dog feeds its young milk.", "Sharks are fish.", "So the answer is (B)."]


def _row(i):
    return dict(qid=f"q{i}", question=f"Which animal number {i} is a mammal?", choices=["shark", "dog"], answer=1,
                hint="", image="", has_image=False, caption="", solution="A dog feeds its young milk. So the answer is dog.",
                image_record="", features_zeroed=False)


def _items(n, start=0):
    return [ScoreItem(ProblemView.from_row(_row(i)), SENTS) for i in range(start, start + n)]


def _faults(**kw):
    base = dict(rate_429=0, rate_500=0, rate_slow=0, rate_malformed=0, rate_truncated=0, latency_ms=0.0, seed=0,
                slow_s=0.0, plan=[], reject_response_formats=[])
    return SimpleNamespace(**{**base, **kw})


def _settings(url, **kw):
    base = dict(base_url=url, model="reference", api_key="k", concurrency=1, max_retries=2, timeout_s=10.0,
                backoff_base_s=0.01, backoff_max_s=0.05)
    return at_url(**{**base, **kw})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("structured") / "dataset"
    datasets.DatasetDict(train=datasets.Dataset.from_list([_row(i) for i in range(40)])).save_to_disk(str(d))
    return d


# ---- the schemas --------------------------------------------------------------------------


def test_score_schema_has_every_sentence_key_required_and_nothing_else():
    keys = list(prompts.sentences_object(SENTS))
    schema = prompts.score_schema(keys)
    assert schema["required"] == keys and list(schema["properties"]) == keys
    assert schema["additionalProperties"] is False
    assert all(p == {"type": "number", "minimum": 0, "maximum": 1} for p in schema["properties"].values())
    rf = prompts.response_format("json_schema", "score", schema)
    assert rf == {"type": "json_schema", "json_schema": {"name": "sentence_scores", "strict": True, "schema": schema}}
    assert prompts.response_format("json_object", "score", schema) == {"type": "json_object"}
    assert prompts.response_format("none", "score", schema) is None
    assert prompts.reply_schema("judge")["properties"]["better"]["enum"] == ["A", "B"]  # forced choice
    assert prompts.reply_schema("correct")["required"] == ["corrected_rationale"]
    assert [prompts.next_response_format(m) for m in prompts.RESPONSE_FORMATS] == ["json_object", "none", None]
    with pytest.raises(ValueError):
        prompts.reply_schema("score")


def test_reference_replies_satisfy_their_schemas_and_the_server_sees_the_format(dataset_dir, tmp_path):
    with start_local_server(dataset_dir) as server:
        with Teacher(_settings(server.base_url, concurrency=4), ReplyCache(tmp_path / "c.sqlite")) as t:
            scores = t.score_sentences(_items(3))
            corr = t.correct([CorrectionItem(ProblemView.from_row(_row(0)), "A dog is a mammal.")])
            verdict = t.judge([JudgeItem(ProblemView.from_row(_row(0)), "A dog feeds its young milk.", "x.")])
            usage = t.usage()
        outcomes = server.stats()["outcomes"]
    assert all(not r.dropped for r in scores) and not corr[0].fallback and verdict[0].choice in ("A", "B", "tie")
    keys = list(prompts.sentences_object(SENTS))
    assert list(json.loads(scores[0].raw_reply)) == keys  # the schema's required keys, in order
    assert usage["response_format"] == usage["response_format_requested"] == "json_schema"
    assert usage["response_format_fallbacks"] == [] and outcomes["format_json_schema"] == 5


def test_cache_key_depends_on_the_response_format():
    msgs = prompts.score_messages(ProblemView.from_row(_row(0)), SENTS)
    schema = prompts.score_schema(list(prompts.sentences_object(SENTS)))
    keys = {m: cache_key(request_record("m", "v", msgs, 0.0, prompts.response_format(m, "score", schema)))
            for m in prompts.RESPONSE_FORMATS}
    assert len(set(keys.values())) == 3
    # 'none' sends no response_format: its key is the key of a cache written before formats existed
    assert "response_format" not in request_record("m", "v", msgs, 0.0, None)


# ---- HTTP 400 to a response format: one logged fallback -------------------------------------


def test_endpoint_rejecting_json_schema_gets_one_logged_fallback(dataset_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="aresnb.teacher")
    with start_local_server(dataset_dir, faults=_faults(reject_response_formats=["json_schema"])) as server:
        with Teacher(_settings(server.base_url), ReplyCache(tmp_path / "c.sqlite")) as t:
            results = t.score_sentences(_items(6))
            usage = t.usage()
        outcomes = server.stats()["outcomes"]
    assert all(not r.dropped for r in results)
    assert usage["response_format"] == "json_object" and usage["response_format_requested"] == "json_schema"
    assert [(f["from"], f["to"]) for f in usage["response_format_fallbacks"]] == [("json_schema", "json_object")]
    assert "not supported" in usage["response_format_fallbacks"][0]["error"]
    # sequential client: exactly one request was rejected, every later one went straight to json_object
    assert outcomes["format_json_schema"] == 1 and outcomes["format_json_object"] == 6 and usage["errors"] == {"HTTP400": 1}
    assert any("rejected response_format json_schema" in r.getMessage() and "json_object" in r.getMessage()
               for r in caplog.records)


def test_endpoint_rejecting_both_formats_ends_at_none_and_replays(dataset_dir, tmp_path):
    faults = _faults(reject_response_formats=["json_schema", "json_object"])
    cache = tmp_path / "c.sqlite"
    with start_local_server(dataset_dir, faults=faults) as server:
        with Teacher(_settings(server.base_url), ReplyCache(cache)) as t:
            first = t.score_sentences(_items(3))
            usage = t.usage()
    assert all(not r.dropped for r in first) and usage["response_format"] == "none"
    assert [f["to"] for f in usage["response_format_fallbacks"]] == ["json_object", "none"]
    # strict replay with no endpoint finds the answers under the mode the recorded run fell back to
    with Teacher(_settings("http://127.0.0.1:9/v1", replay_only=True), ReplyCache(cache)) as t:
        again = t.score_sentences(_items(3))
        assert t.usage()["calls"] == 0
    assert [r.scores for r in again] == [r.scores for r in first]


# ---- the answer cache keeps only valid replies ---------------------------------------------


def test_invalid_reply_is_logged_never_served_and_a_rerun_asks_again(dataset_dir, tmp_path):
    cache_file = tmp_path / "c.sqlite"
    faults = _faults(plan=["0:malformed", "1:truncated"])  # the request and its repair both break
    with start_local_server(dataset_dir, faults=faults) as server:
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            bad = t.score_sentences(_items(1))[0]
            usage = t.usage()
        cache = ReplyCache(cache_file)
        assert bad.dropped and bad.drop_reason == "invalid_reply" and "after repair" in bad.detail
        assert usage["calls"] == 2 and usage["invalid_replies"] == 2 and usage["repairs"] == 1
        assert len(cache) == 0  # no answer stored
        attempts = list(cache.attempts())
        assert [a["status"] for a in attempts] == ["invalid", "invalid"] and all(a["error"] for a in attempts)
        assert attempts[0]["reply"].startswith("Here are my scores")
        # the re-run (request 2: no fault) asks again, gets a valid answer, and a third run pays nothing
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            good = t.score_sentences(_items(1))[0]
            assert t.usage()["calls"] == 1 and not good.dropped and not good.cached
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            again = t.score_sentences(_items(1))[0]
            assert t.usage()["calls"] == 0 and again.cached and again.scores == good.scores
        assert server.stats()["requests"] == 3
    assert cache.stats()["attempts"] == {"invalid": 2, "valid": 1} and cache.stats()["answers"] == 1


def test_repaired_reply_becomes_the_answer_of_the_original_request(dataset_dir, tmp_path):
    cache_file = tmp_path / "c.sqlite"
    with start_local_server(dataset_dir, faults=_faults(plan=["0:malformed"])) as server:
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            first = t.score_sentences(_items(1))[0]
            assert t.usage()["calls"] == 2 and t.usage()["repairs"] == 1
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            again = t.score_sentences(_items(1))[0]
            assert t.usage()["calls"] == 0 and t.usage()["repairs"] == 0  # served, not repaired again
    assert not first.dropped and again.scores == first.scores and again.raw_reply == first.raw_reply
    stats = ReplyCache(cache_file).stats()
    assert stats["repaired_answers"] == 1 and stats["attempts"] == {"invalid": 1, "valid": 1}


def test_reply_paid_but_unchecked_by_a_killed_run_is_checked_not_asked_again(dataset_dir, tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite")
    item = _items(1)[0]
    keys = list(prompts.sentences_object(SENTS))
    msgs = prompts.score_messages(item.problem, SENTS)
    record = request_record("reference", prompts.PROMPT_VERSION, msgs, 0.0,
                            prompts.response_format("json_schema", "score", prompts.score_schema(keys)))
    reply = json.dumps({k: 0.5 for k in keys})
    cache.record_attempt(cache_key(record), record, "score", reply, {"prompt_tokens": 9, "completion_tokens": 9}, 0.0, None)
    with start_local_server(dataset_dir) as server:
        with Teacher(_settings(server.base_url), cache) as t:
            r = t.score_sentences([item])[0]
            usage = t.usage()
        assert server.stats()["requests"] == 0
    assert r.scores == [0.5, 0.5, 0.5] and r.cached and usage["unchecked_replies_reused"] == 1
    assert [a["status"] for a in cache.attempts()] == ["valid"] and len(cache) == 1


def test_invalid_answer_of_an_old_cache_is_demoted_asked_again_and_purgeable(dataset_dir, tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite")
    item = _items(1)[0]
    keys = list(prompts.sentences_object(SENTS))
    record = request_record("reference", prompts.PROMPT_VERSION, prompts.score_messages(item.problem, SENTS), 0.0,
                            prompts.response_format("json_schema", "score", prompts.score_schema(keys)))
    cache.put(cache_key(record), record, "score", "Here are my scores: {}", {})  # what the old cache kept
    with start_local_server(dataset_dir) as server:
        with Teacher(_settings(server.base_url), cache) as t:
            r = t.score_sentences([item])[0]
            assert t.usage()["stale_answers_dropped"] == 1 and t.usage()["calls"] == 1 and not r.dropped
    assert cache.get(cache_key(record))["reply"] != "Here are my scores: {}"
    # purge-invalid: an invalid answer leaves the answer table for the attempt log; valid ones stay
    other = request_record("reference", prompts.PROMPT_VERSION,
                           prompts.judge_messages(item.problem, "a.", "b."), 0.0, None)
    cache.put(cache_key(other), other, "judge", '{"better": "C"}', {})
    assert purge_invalid(cache) == {"checked": 2, "moved_to_attempts": 1, "by_kind": {"judge": 1}}
    assert len(cache) == 1 and cache.get(cache_key(other)) is None
    assert purge_invalid(cache)["moved_to_attempts"] == 0


# ---- the budget ---------------------------------------------------------------------------


def test_budget_stops_before_the_spend_passes_the_limit_and_counts_earlier_stages(dataset_dir, tmp_path):
    cache = ReplyCache(tmp_path / "c.sqlite")
    # $0.01 a completion token, max_tokens 100: a request's worst case is $1.00
    s = _settings("", price_output_per_mtok=10_000.0, max_tokens=100, max_cost_usd=1.5, spend_scope="run-A")
    with start_local_server(dataset_dir) as server:
        with Teacher(dataclasses.replace(s, base_url=server.base_url), cache) as t:
            with pytest.raises(BudgetExceeded, match=r"of its \$1.5000 limit") as e:
                t.score_sentences(_items(10))
            usage = t.usage()
        calls = server.stats()["requests"]
    spent = cache.spend("run-A")
    assert 0 < calls < 10 and usage["calls"] == calls and spent == pytest.approx(usage["cost_usd"])
    assert spent <= 1.5 and spent + 1.0 > 1.5  # stopped at the first request whose worst case crossed it
    assert f"${spent:.4f}" in str(e.value)
    # the next stage of the same run starts from that spend: it cannot send anything more
    with Teacher(dataclasses.replace(s, base_url=server.base_url), cache) as t:
        assert t.usage()["run_spend_usd"] == pytest.approx(spent)
        with pytest.raises(BudgetExceeded):
            t.score_sentences(_items(1, start=20))
        assert t.usage()["calls"] == 0


# ---- scoring while producing --------------------------------------------------------------


def test_stream_scores_items_as_they_are_produced_in_order_with_a_bounded_queue(dataset_dir, tmp_path):
    produced_at = []  # (index, results yielded so far) when the producer hands out each item
    yielded = 0

    def producer():
        for i, item in enumerate(_items(12)):
            produced_at.append((i, yielded))
            yield item

    with start_local_server(dataset_dir) as server:
        with Teacher(_settings(server.base_url, concurrency=4), ReplyCache(tmp_path / "a.sqlite")) as t:
            streamed = []
            for r in t.stream(producer(), max_pending=3):
                streamed.append(r)
                yielded += 1
            future = t.submit(_items(1, start=30)[0])
            single = future.result(timeout=30)
        with Teacher(_settings(server.base_url), ReplyCache(tmp_path / "b.sqlite")) as t:
            batch = t.score_sentences(_items(12))
    assert [r.scores for r in streamed] == [r.scores for r in batch] and not single.dropped
    assert all(i - done <= 3 for i, done in produced_at)  # never more than 3 submitted and not yielded
    with pytest.raises(ValueError):
        next(Teacher.stream(None, [], max_pending=0))


# ---- the judge's own endpoint -------------------------------------------------------------


def test_judge_section_replaces_the_teachers_endpoint_where_set(monkeypatch):
    cfg = load_config("params/scienceqa_base.yaml")
    t, j = endpoint(cfg, "teacher"), endpoint(cfg, "judge")
    assert (t.base_url, t.model, t.api_key_env) == ("https://api.anthropic.com/v1/", "claude-3-haiku-20240307",
                                                    "ANTHROPIC_API_KEY")
    assert (j.base_url, j.model, j.api_key_env) == ("https://api.openai.com/v1", "gpt-4o", "OPENAI_API_KEY")
    assert j.price_output_per_mtok == 10.0 and t.price_output_per_mtok == 1.25
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="evaluation.judge.api_key_env .* 'OPENAI_API_KEY'"):
        api_key(cfg, "judge")
    smoke = load_config(None)
    assert endpoint(smoke, "judge").serve_local and endpoint(smoke, "judge").model == "reference"
    with pytest.raises(ConfigError, match="did you mean 'evaluation.judge'"):
        load_config(None, ["evaluation.judge_model=gpt-4o"])


def test_open_teacher_role_judge_uses_the_judges_endpoint_and_key(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ARESNB_JUDGE_KEY", "judge-secret")
    with start_local_server(dataset_dir) as server:
        cfg = load_config(None, [f"run.output_dir={tmp_path}", f"evaluation.judge.base_url={server.base_url}",
                                 "evaluation.judge.model=judge-model", "evaluation.judge.api_key_env=ARESNB_JUDGE_KEY"])
        with open_teacher(cfg, RunPaths(cfg), role="judge") as judge:
            assert judge.server is None  # its own endpoint: no local server started
            assert judge.settings.base_url == server.base_url and judge.settings.api_key == "judge-secret"
            verdict = judge.judge([JudgeItem(ProblemView.from_row(_row(0)), "A dog feeds its young milk.", "x.")])[0]
            assert judge.usage()["model"] == "judge-model" and judge.usage()["calls"] == 1
    assert verdict.choice == "A"


# ---- the user's own cache, from the command line --------------------------------------------


def test_teacher_cache_command_stats_and_export(dataset_dir, tmp_path):
    import subprocess
    import sys

    cache_file = tmp_path / "c.sqlite"
    with start_local_server(dataset_dir, faults=_faults(plan=["0:malformed", "1:malformed"])) as server:
        with Teacher(_settings(server.base_url), ReplyCache(cache_file)) as t:
            t.score_sentences(_items(1))  # its reply and its repair both invalid: dropped
            t.score_sentences(_items(1, start=1))  # valid

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "teacher-cache", *args, "--path", str(cache_file)],
                              capture_output=True, text=True, check=True).stdout

    stats = json.loads(cli("stats"))
    assert stats["answers"] == 1 and stats["attempts"] == {"invalid": 2, "valid": 1}
    assert stats["attempts_by_status_and_kind"]["invalid"] == {"score": 2}
    out = cli("export", "--out", str(tmp_path / "run.jsonl"), "--attempts")
    assert "1 valid answers" in out and "3 attempts" in out
    attempts = [json.loads(x) for x in (tmp_path / "run.attempts.jsonl").read_text().splitlines()]
    assert [a["status"] for a in attempts] == ["invalid", "invalid", "valid"] and attempts[0]["error"]
    assert json.loads(cli("purge-invalid"))["moved_to_attempts"] == 0  # nothing invalid is an answer
    missing = subprocess.run([sys.executable, "-m", "aresnb.pipeline.cli", "teacher-cache", "stats", "--path",
                              str(tmp_path / "none.sqlite")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no cache at" in missing.stderr


def test_fault_plan_and_rejected_formats_are_checked_with_the_parameters():
    assert load_config(None, ["teacher.faults.plan=['0:malformed', '3:429']"]).teacher.faults.plan == ["0:malformed", "3:429"]
    with pytest.raises(ConfigError, match="teacher.faults.plan: 'x:malformed' is not 'N:fault'"):
        load_config(None, ["teacher.faults.plan=['x:malformed']"])
    with pytest.raises(ConfigError, match="teacher.faults.plan: '2:boom'"):
        load_config(None, ["teacher.faults.plan=['2:boom']"])
    with pytest.raises(ConfigError, match="reject_response_formats: 'xml'"):
        load_config(None, ["teacher.faults.reject_response_formats=[xml]"])
    with pytest.raises(ConfigError, match="'json_object', 'none'"):
        load_config(None, ["teacher.response_format=json"])
