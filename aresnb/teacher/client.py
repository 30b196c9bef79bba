"""The async Teacher client: any OpenAI-compatible endpoint, cached, retried, bounded, limited.

One request goes: answer-cache lookup (or a paid-but-unchecked reply of a killed run) -> (miss)
semaphore -> budget check (``teacher.max_cost_usd``) -> rate limits (requests and tokens per
minute) -> ``chat.completions.create`` with the structured-output ``response_format`` and retries
on 429 / 5xx / time-outs / connection errors (exponential backoff with full jitter, at least the
server's ``Retry-After``) -> the reply is logged as an attempt the moment it arrives ->
validation -> a valid reply becomes the cached answer; an invalid one gets ONE repair request,
whose valid reply becomes the answer, else the item is dropped and counted.

Structured outputs: ``teacher.response_format`` is ``json_schema`` (a strict schema per request:
the sentence keys of a scoring request, the envelope of a correction or a verdict), ``json_object``
or ``none``. An endpoint that answers HTTP 400 to one mode gets the next one (json_schema ->
json_object -> none), once per client, logged and counted in ``usage()["response_format_fallbacks"]``.
Validation stays whatever the mode: endpoints exist that ignore a schema and answer 200.

The openai client's own retries are off (``max_retries=0``) so every retry is ours and counted.

Where a request goes: the endpoint's ``base_url`` over HTTP with the openai package (a remote
endpoint, or the local server), or, for a backend called in this process (``backend``: a
``ReplyBackend`` of ``aresnb.teacher.backends``), its ``areply``. Everything else above is the
same for both: the backend's ``Busy`` is retried as a 429 is, its ``FormatUnsupported`` falls back
as an HTTP 400 does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from typing import Any, Awaitable, Callable, Sequence

import openai

from . import prompts
from .cache import ReplyCache, cache_key, request_record
from .limits import Budget, Limits, RateLimiter, cost_usd, message_tokens
from .items import (CacheMiss, CorrectionItem, CorrectionResult, FormatRejected, JudgeItem, JudgeResult, ModeLowered,
                    Reply, ScoreItem, ScoreResult, TeacherAPIError, TeacherUnreachable)
from .problem import ProblemView
from .backends import Busy, Completion, FormatUnsupported, ReplyBackend, completion_of
from .endpoints import Endpoint
from .validation import InvalidReply, parse_correction, parse_judgement, parse_scores


log = logging.getLogger("aresnb.teacher")


def _retry_after(exc: Exception) -> float | None:
    if isinstance(exc, Busy):
        return exc.retry_after_s
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None  # an HTTP date: fall back to our own backoff
    return None


class AsyncTeacher:
    """The async core; use :class:`aresnb.teacher.Teacher` (sync) from notebooks and stages.

    ``clock`` and ``sleep`` drive the rate limiters (tests inject a fake clock)."""

    RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError,
                 Busy, TimeoutError)  # TimeoutError: an in-process backend's reply past teacher.timeout_s

    def __init__(self, settings: Endpoint, cache: ReplyCache, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, backend: ReplyBackend | None = None):
        self.s = settings
        self.cache = cache
        self.backend = backend  # called in this process instead of the HTTP endpoint
        prompts.response_format(settings.response_format, "judge", prompts.JUDGE_SCHEMA)  # checks the mode's name
        prompts.check_prompt_style(settings.prompt_style)
        self.client = None if backend is not None else openai.AsyncOpenAI(
            base_url=settings.base_url, api_key=settings.api_key, max_retries=0, timeout=settings.timeout_s)
        self.sem = asyncio.Semaphore(settings.concurrency)
        self.rng = random.Random(settings.seed)
        self.inflight: dict[str, asyncio.Future] = {}
        self.used_keys: set[str] = set()  # every answer this client used (for the run's cassette)
        self.pending_keys = cache.pending_keys()  # replies a killed run paid for and never checked
        self.mode = settings.response_format  # lowered by a 400 fallback
        self.fallbacks: list[dict] = []
        per_minute = {"requests": settings.max_requests_per_minute, "tokens": settings.max_tokens_per_minute}
        self.limits = Limits({name: RateLimiter(limit) for name, limit in per_minute.items() if limit},
                             clock=clock, sleep=sleep)
        self.budget = Budget(settings.max_cost_usd, cache.spend(settings.spend_scope) if settings.spend_scope else 0.0)
        self.spent_before = self.budget.spent
        self.counts: dict[str, Any] = {
            "requests": 0, "cache_hits": 0, "calls": 0, "ok_calls": 0, "retries": 0, "errors": {},
            "repairs": 0, "invalid_replies": 0, "unchecked_replies_reused": 0, "stale_answers_dropped": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
        }

    # ---- one chat completion ------------------------------------------------------------------
    def _record(self, kind: str, messages: list[dict], schema: dict, mode: str) -> dict:
        return request_record(self.s.request_model, prompts.PROMPT_VERSION, messages, self.s.temperature,
                              prompts.response_format(mode, kind, schema))

    async def complete(self, kind: str, messages: list[dict], schema: dict) -> Reply:
        """The reply to one request. A request with a valid cached answer is never sent again; one
        whose reply was paid but never checked (a killed run) reuses that reply."""
        self.counts["requests"] += 1
        mode = self.mode
        while True:
            record = self._record(kind, messages, schema, mode)
            key = cache_key(record)
            hit = self.cache.get(key)
            if hit is not None:
                self.counts["cache_hits"] += 1
                return Reply(hit["reply"], key, record, kind, "cache", hit["usage"])
            pending = self.cache.pending_attempt(key) if key in self.pending_keys else None
            if pending is not None:
                self.counts["cache_hits"] += 1
                self.counts["unchecked_replies_reused"] += 1
                return Reply(pending["reply"], key, record, kind, "pending", pending["usage"], pending["attempt_id"])
            if self.s.replay_only and key not in self.inflight:
                # the recorded run may have fallen back to a lower mode: its answers are under that mode
                lower = prompts.next_response_format(mode)
                if lower is not None:
                    mode = lower
                    continue
                raise CacheMiss(f"teacher.replay_only: no cached reply for a {kind} request (key {key[:16]}…)")
            try:
                if key in self.inflight:  # the same request is already on its way: share its reply
                    shared = await asyncio.shield(self.inflight[key])
                    self.counts["cache_hits"] += 1
                    return dataclasses.replace(shared, source="shared")
                return await self._send(kind, key, record, messages, mode)
            except FormatRejected as e:
                mode = self._fall_back(mode, str(e))
            except ModeLowered:  # another request learnt of a fallback while this one waited to be sent
                mode = self.mode

    def _fall_back(self, mode: str, why: str) -> str:
        lower = prompts.next_response_format(mode)
        if self.mode == mode:  # the first request to learn it lowers the mode for every later one
            self.mode = lower
            self.fallbacks.append({"from": mode, "to": lower, "error": why[:300]})
            log.warning("the Teacher endpoint %s rejected response_format %s (%s); falling back to %s",
                        self.s.base_url, mode, why[:200], lower)
        return lower

    async def _send(self, kind: str, key: str, record: dict, messages: list[dict], mode: str) -> Reply:
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        try:
            reply = await self._call(kind, key, record, messages, mode)
            fut.set_result(reply)
            return reply
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self.inflight[key]

    async def _call(self, kind: str, key: str, record: dict, messages: list[dict], mode: str) -> Reply:
        s = self.s
        mode_format = record.get("response_format")
        prompt_estimate = message_tokens(messages, s.image_tokens)
        worst_case = cost_usd(prompt_estimate, s.max_tokens, s.price_input_per_mtok, s.price_output_per_mtok)
        tokens_reserved = prompt_estimate + s.max_tokens
        async with self.sem:
            if prompts.RESPONSE_FORMATS.index(self.mode) > prompts.RESPONSE_FORMATS.index(mode):
                raise ModeLowered()
            for attempt in range(s.max_retries + 1):
                reserved = self.budget.reserve(worst_case, kind)
                paid, tokens_used, grants = 0.0, 0, {}
                try:
                    # both limits at once: the moment they admit it is the moment the request is sent
                    grants = await self.limits.acquire(requests=1, tokens=tokens_reserved)
                    self.counts["calls"] += 1
                    reply = await self._ask(messages, mode_format)
                    usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}
                    tokens_used = usage["prompt_tokens"] + usage["completion_tokens"]
                    paid = cost_usd(usage["prompt_tokens"], usage["completion_tokens"], s.price_input_per_mtok,
                                    s.price_output_per_mtok)
                except self.RETRYABLE as e:
                    name = type(e).__name__
                    self._count_error(name)
                    if attempt == s.max_retries:
                        if isinstance(e, openai.APIConnectionError) and self.counts["ok_calls"] == 0:
                            raise TeacherUnreachable(
                                f"cannot reach the Teacher at {s.base_url} ({name} after {attempt + 1} "
                                "attempts; offline, or a wrong teacher.base_url?)") from None
                        raise TeacherAPIError(f"{name} after {attempt + 1} attempts: {e}") from None
                    self.counts["retries"] += 1
                    await asyncio.sleep(self._delay(attempt, _retry_after(e)))
                    continue
                except openai.AuthenticationError as e:
                    raise TeacherAPIError(f"the Teacher endpoint rejected the API key (HTTP {e.status_code}); "
                                          "check the variable named by teacher.api_key_env") from None
                except openai.BadRequestError as e:
                    self._count_error(f"HTTP{e.status_code}")
                    if mode_format is not None:
                        raise FormatRejected(mode_format["type"], f"HTTP {e.status_code} to response_format "
                                                                    f"{mode_format['type']}: {e.message}") from None
                    raise TeacherAPIError(f"HTTP {e.status_code}: {e.message}") from None
                except FormatUnsupported as e:
                    self._count_error(type(e).__name__)
                    if mode_format is not None:
                        raise FormatRejected(mode_format["type"], f"{self.backend.name} does not support "
                                                                    f"response_format {mode_format['type']}: {e}") from None
                    raise TeacherAPIError(f"{self.backend.name}: {e}") from None
                except openai.APIStatusError as e:
                    self._count_error(f"HTTP{e.status_code}")
                    raise TeacherAPIError(f"HTTP {e.status_code}: {e.message}") from None
                finally:
                    self.budget.settle(reserved, paid)
                    self.limits.adjust(grants, tokens=tokens_reserved - tokens_used)  # nothing if never granted
                self.counts["ok_calls"] += 1
                self.counts["prompt_tokens"] += usage["prompt_tokens"]
                self.counts["completion_tokens"] += usage["completion_tokens"]
                self.counts["cost_usd"] += paid
                text = reply.text
                # committed before anything else: nothing paid is lost
                attempt_id = self.cache.record_attempt(key, record, kind, text, usage, paid, s.spend_scope)
                return Reply(text, key, record, kind, "call", usage, attempt_id)
        raise AssertionError("unreachable")

    async def _ask(self, messages: list[dict], response_format: dict | None) -> Completion:
        """One request on the wire (or to the in-process backend): the reply text and its tokens."""
        s = self.s
        if self.backend is not None:
            try:  # teacher.timeout_s bounds a reply as it bounds an HTTP request; a time-out is retried
                out = await asyncio.wait_for(self.backend.areply(messages, s.max_tokens, response_format), s.timeout_s)
            except (Busy, FormatUnsupported, TimeoutError):
                raise
            except Exception as e:  # noqa: BLE001 - whatever the API raises drops the item, named
                self._count_error(type(e).__name__)
                raise TeacherAPIError(f"{self.backend.name}: {type(e).__name__}: {e}") from None
            return completion_of(out, messages)
        extra = {"response_format": response_format} if response_format is not None else {}
        resp = await self.client.chat.completions.create(
            model=s.request_model, messages=messages, temperature=s.temperature, max_tokens=s.max_tokens, **extra)
        text = (resp.choices[0].message.content if resp.choices else None) or ""
        return Completion(text, getattr(resp.usage, "prompt_tokens", 0) or 0,
                          getattr(resp.usage, "completion_tokens", 0) or 0)

    def _count_error(self, name: str) -> None:
        self.counts["errors"][name] = self.counts["errors"].get(name, 0) + 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)], never below Retry-After."""
        jitter = self.rng.uniform(0.0, min(self.s.backoff_max_s, self.s.backoff_base_s * 2 ** attempt))
        return max(jitter, min(retry_after, 600.0)) if retry_after is not None else jitter

    # ---- validated request with one repair ---------------------------------------------------
    def _accept(self, reply: Reply, answer_for: Reply | None = None) -> None:
        """A valid reply: its attempt is marked valid and it becomes the cached answer of its request,
        or, for a repair, of the original request (``answer_for``: the one a re-run asks)."""
        target = answer_for or reply
        answer = None
        if reply.source != "cache" or answer_for is not None:
            answer = dict(key=target.key, record=target.record, kind=target.kind, reply=reply.text, usage=reply.usage,
                          repaired=answer_for is not None)
        if reply.attempt_id is not None or answer is not None:
            self.cache.settle(reply.attempt_id, answer=answer)  # one transaction
        self.used_keys.add(target.key)

    def _reject(self, reply: Reply, error: str) -> None:
        """An invalid reply: logged as an invalid attempt, never an answer (a re-run asks again)."""
        if reply.source in ("call", "pending"):
            self.counts["invalid_replies"] += 1
        if reply.attempt_id is not None:
            self.cache.settle(reply.attempt_id, error)
        if reply.source == "cache":  # an answer stored before answers were validated
            self.cache.demote(reply.key, error)
            self.counts["stale_answers_dropped"] += 1

    async def _validated(self, kind: str, messages: list[dict], parse: Callable[[str], Any], schema: dict):
        """(value | None, raw reply, cached, error category, error detail)."""
        try:
            reply = await self.complete(kind, messages, schema)
        except TeacherUnreachable:
            raise
        except TeacherAPIError as e:
            return None, None, False, "api_error", str(e)
        try:
            value = parse(reply.text)
        except InvalidReply as e:
            self._reject(reply, str(e))
            if reply.source == "cache":  # demoted: ask the endpoint afresh
                return await self._validated(kind, messages, parse, schema)
            self.counts["repairs"] += 1
            try:
                repair = await self.complete(kind, prompts.repair_messages(messages, reply.text, str(e)), schema)
            except TeacherUnreachable:
                raise
            except TeacherAPIError as e2:
                return None, reply.text, False, "api_error", str(e2)
            try:
                value = parse(repair.text)
            except InvalidReply as e2:
                self._reject(repair, str(e2))
                return None, repair.text, reply.cached and repair.cached, "invalid_reply", f"{e}; after repair: {e2}"
            self._accept(repair, answer_for=reply)
            return value, repair.text, reply.cached and repair.cached, None, None
        self._accept(reply)
        return value, reply.text, reply.cached, None, None

    def _image(self, problem: ProblemView) -> str | None:
        return problem.image_data_url() if self.s.vision else None

    async def score(self, item: ScoreItem) -> ScoreResult:
        if not item.sentences:
            return ScoreResult(None, True, "empty_rationale", None, False, "no sentences to score")
        messages = prompts.score_messages(item.problem, item.sentences, self._image(item.problem), self.s.prompt_style)
        keys = list(prompts.sentences_object(item.sentences))
        scores, raw, cached, reason, detail = await self._validated(
            "score", messages, lambda r: parse_scores(r, keys), prompts.score_schema(keys))
        return ScoreResult(scores, scores is None, reason, raw, cached, detail)

    async def correct(self, item: CorrectionItem) -> CorrectionResult:
        messages = prompts.correct_messages(item.problem, item.rationale, self._image(item.problem), self.s.prompt_style)
        text, raw, cached, reason, detail = await self._validated("correct", messages, parse_correction,
                                                                  prompts.CORRECTION_SCHEMA)
        return CorrectionResult(text, text is None, raw, cached, detail)

    async def judge(self, item: JudgeItem) -> JudgeResult:
        messages = prompts.judge_messages(item.problem, item.rationale_a, item.rationale_b, self._image(item.problem))
        choice, raw, cached, reason, detail = await self._validated("judge", messages, parse_judgement,
                                                                    prompts.JUDGE_SCHEMA)
        return JudgeResult(choice, raw, cached, detail)

    async def handle(self, item: ScoreItem | CorrectionItem | JudgeItem):
        """Any request item: a ScoreItem is scored, a CorrectionItem corrected, a JudgeItem judged."""
        if isinstance(item, ScoreItem):
            return await self.score(item)
        if isinstance(item, CorrectionItem):
            return await self.correct(item)
        if isinstance(item, JudgeItem):
            return await self.judge(item)
        raise TypeError(f"not a Teacher request item: {type(item).__name__}")

    async def run_many(self, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None = None) -> list:
        """``fn`` over ``items`` concurrently (the semaphore bounds calls), results in input order.
        The first error (a budget stop, an unreachable endpoint) cancels the rest and is raised."""
        done = 0

        async def one(item):
            nonlocal done
            out = await fn(item)
            done += 1
            if progress is not None:
                progress(done, len(items))
            return out

        tasks = [asyncio.ensure_future(one(i)) for i in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.backend is not None and hasattr(self.backend, "aclose"):
            await self.backend.aclose()  # an in-process backend's sessions, if it keeps any

    def usage(self) -> dict:
        """requests (incl. repairs), cache_hits, calls (HTTP attempts), ok_calls, retries, errors by
        type, repairs, invalid_replies (received replies that failed validation), prompt/completion
        tokens (as the endpoint reports them), cost_usd (this client's), run_spend_usd (the run's
        total so far, every stage and endpoint), the response format asked and in effect, its
        fallbacks, and the seconds the rate limits held requests back."""
        c = dict(self.counts, errors=dict(self.counts["errors"]))
        c["model"] = self.s.request_model
        c["response_format_requested"] = self.s.response_format
        c["response_format"] = self.mode
        c["response_format_fallbacks"] = list(self.fallbacks)
        c["run_spend_usd"] = self.budget.spent
        c["max_cost_usd"] = self.s.max_cost_usd
        c["rate_limit_wait_s"] = round(self.limits.waited_s, 3)
        return c
