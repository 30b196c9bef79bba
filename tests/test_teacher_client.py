"""The Teacher client's error handling against an endpoint in this process: the reference Teacher
answers every request except those whose arrival index a test scripts (401, 404, 422, 429 with a
Retry-After, 500). Every fault lands on a known request and nothing races a clock; the retry
delays are recorded, not slept."""

import asyncio

import pytest
from aiohttp import web

from aresnb.teacher import ProblemView, ReplyCache, ScoreItem
from aresnb.teacher.client import AsyncTeacher
from aresnb.teacher.endpoints import at_url
from aresnb.teacher.reference import ReferenceTeacher
from aresnb.teacher.server import FaultPlan, TeacherServer

SECRET = "sk-CLIENT-TEST-7d1e0c"
PROBLEM = ProblemView(qid="q1", question="Which animal is a mammal?", choices=("shark", "dog"), answer=1,
                      hint="", solution="A dog feeds its young milk. A shark is a fish.")
GOOD = ["A dog feeds its young milk.", "A shark is a fish."]
OTHER = ["Dogs are mammals."]


class ScriptedEndpoint:
    """An OpenAI-compatible endpoint: request number i (0-based, in arrival order) gets the scripted
    (status, headers) error when ``script`` names it, else the reference Teacher's reply."""

    def __init__(self, script: dict[int, tuple[int, dict]]):
        self.script = script
        self.received = 0
        self.teacher = TeacherServer(ReferenceTeacher([PROBLEM]), "reference", FaultPlan({}, 0, 0.0, 0.0))

    @web.middleware
    async def _scripted(self, request: web.Request, handler):
        index, self.received = self.received, self.received + 1
        if index not in self.script:
            return await handler(request)
        status, headers = self.script[index]
        return web.json_response({"error": {"message": f"scripted HTTP {status}", "type": "scripted"}},
                                 status=status, headers=headers)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._scripted])
        app.add_routes([web.post("/v1/chat/completions", self.teacher.chat)])
        return app


def score_against(tmp_path, script: dict, items: list, **settings) -> tuple[list, dict, ScriptedEndpoint, list]:
    """Score ``items`` (lists of sentences) against a scripted endpoint: (results, usage, endpoint,
    the (attempt, Retry-After) of every retry delay the client computed)."""
    endpoint = ScriptedEndpoint(script)
    delays = []

    async def main():
        runner = web.AppRunner(endpoint.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        s = at_url(**{"base_url": f"http://127.0.0.1:{port}/v1", "model": "reference", "api_key": SECRET,
                               "concurrency": 1, "max_retries": 4, "timeout_s": 30.0, **settings})
        teacher = AsyncTeacher(s, ReplyCache(tmp_path / "cache.sqlite"))
        teacher._delay = lambda attempt, retry_after: delays.append((attempt, retry_after)) or 0.0
        try:
            results = await teacher.run_many(teacher.score, [ScoreItem(PROBLEM, list(x)) for x in items])
            return results, teacher.usage()
        finally:
            await teacher.aclose()
            await runner.cleanup()

    results, usage = asyncio.run(main())
    return results, usage, endpoint, delays


def test_a_rejected_key_drops_the_request_once_and_names_the_key_variable(tmp_path):
    [r], usage, endpoint, delays = score_against(tmp_path, {0: (401, {})}, [GOOD])
    assert endpoint.received == 1 and usage["retries"] == 0 and delays == []  # never retried
    assert r.dropped and r.drop_reason == "api_error" and r.scores is None
    assert "rejected the API key (HTTP 401)" in r.detail and "teacher.api_key_env" in r.detail
    assert SECRET not in r.detail


@pytest.mark.parametrize("status", [403, 404, 422])
def test_a_client_error_is_not_retried(tmp_path, status):
    [r, ok], usage, endpoint, delays = score_against(tmp_path, {0: (status, {})}, [GOOD, OTHER])
    assert endpoint.received == 2 and usage["retries"] == 0 and delays == []
    assert r.dropped and r.drop_reason == "api_error" and f"HTTP {status}" in r.detail
    assert usage["errors"] == {f"HTTP{status}": 1}
    assert not ok.dropped and len(ok.scores) == 1  # the next request is unaffected


def test_rate_limits_and_server_errors_are_retried_with_the_servers_retry_after(tmp_path):
    script = {0: (429, {"Retry-After": "7"}), 1: (500, {}), 2: (429, {"retry-after-ms": "250"})}
    [r], usage, endpoint, delays = score_against(tmp_path, script, [GOOD])
    assert not r.dropped and len(r.scores) == 2
    assert endpoint.received == 4 and usage["retries"] == 3 and usage["calls"] == 4 and usage["ok_calls"] == 1
    assert delays == [(0, 7.0), (1, None), (2, 0.25)]  # Retry-After (s or ms) reaches the backoff
    assert usage["errors"] == {"RateLimitError": 2, "InternalServerError": 1}


def test_retries_run_out_into_a_counted_api_error(tmp_path):
    script = {i: (500, {}) for i in range(3)}
    [r, ok], usage, endpoint, delays = score_against(tmp_path, script, [GOOD, OTHER], max_retries=2)
    assert r.dropped and r.drop_reason == "api_error" and "InternalServerError after 3 attempts" in r.detail
    assert [a for a, _ in delays] == [0, 1] and endpoint.received == 4 and not ok.dropped


def test_identical_requests_in_flight_are_sent_once_and_share_the_reply(tmp_path):
    results, usage, endpoint, _ = score_against(tmp_path, {}, [GOOD, GOOD, OTHER, GOOD], concurrency=4)
    assert endpoint.received == 2 and usage["calls"] == 2 and usage["cache_hits"] == 2
    assert [r.scores for r in results[1:2] + results[3:]] == [results[0].scores] * 2
    assert not results[0].cached and results[1].cached and not any(r.dropped for r in results)


def test_a_failed_request_fails_every_request_waiting_on_it(tmp_path):
    results, usage, endpoint, _ = score_against(tmp_path, {0: (404, {})}, [GOOD, GOOD], concurrency=4)
    assert endpoint.received == 1
    assert [(r.dropped, r.drop_reason) for r in results] == [(True, "api_error")] * 2
