"""The async Teacher client: any OpenAI-compatible endpoint, cached, retried, bounded.

One request goes: cache lookup -> (miss) semaphore -> ``chat.completions.create`` with retries on
429 / 5xx / time-outs / connection errors (exponential backoff with full jitter, at least the
server's ``Retry-After``) -> the reply is committed to the cache the moment it arrives ->
validation -> on an invalid reply ONE repair request (itself cached) -> result or a counted drop.
The openai client's own retries are off (``max_retries=0``) so every retry is ours and counted.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import openai

from . import prompts
from .cache import ReplyCache, cache_key, request_record
from .problem import ProblemView
from .validation import InvalidReply, parse_correction, parse_judgement, parse_scores


# ---- requests and results -------------------------------------------------------------------


@dataclass
class ScoreItem:
    problem: ProblemView
    sentences: list[str]


@dataclass
class CorrectionItem:
    problem: ProblemView
    rationale: str


@dataclass
class JudgeItem:
    """The caller decides which rationale is shown as Option A (randomise per item)."""
    problem: ProblemView
    rationale_a: str
    rationale_b: str


@dataclass
class ScoreResult:
    scores: list[float] | None
    dropped: bool
    drop_reason: str | None  # None | "empty_rationale" | "invalid_reply" | "api_error"
    raw_reply: str | None
    cached: bool
    detail: str | None = None  # the validation or API error message


@dataclass
class CorrectionResult:
    text: str | None  # None -> keep the original rationale (fallback)
    fallback: bool
    raw_reply: str | None
    cached: bool = False
    detail: str | None = None


@dataclass
class JudgeResult:
    choice: str | None  # "A" | "B" | "tie"; None when no valid verdict came back (counted)
    raw_reply: str | None
    cached: bool = False
    detail: str | None = None


class TeacherAPIError(RuntimeError):
    """A request failed after every retry, or with a non-retryable status."""


class TeacherUnreachable(TeacherAPIError):
    """Every attempt failed to connect and nothing ever succeeded: fail the run, do not drop samples."""


class CacheMiss(RuntimeError):
    """teacher.replay_only is set and a request is not in the cache."""


@dataclass
class TeacherSettings:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    temperature: float = 0.0
    max_tokens: int = 1024
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    replay_only: bool = False
    vision: bool = True
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, t: Any, base_url: str, api_key: str, seed: int = 0) -> "TeacherSettings":
        names = [f for f in cls.__dataclass_fields__ if f not in ("base_url", "api_key", "seed")]
        return cls(base_url=base_url, api_key=api_key, seed=seed, **{n: getattr(t, n) for n in names})


def _retry_after(exc: Exception) -> float | None:
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
    """The async core; use :class:`aresnb.teacher.Teacher` (sync) from notebooks and stages."""

    RETRYABLE = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)

    def __init__(self, settings: TeacherSettings, cache: ReplyCache):
        self.s = settings
        self.cache = cache
        self.client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key,
                                         max_retries=0, timeout=settings.timeout_s)
        self.sem = asyncio.Semaphore(settings.concurrency)
        self.rng = random.Random(settings.seed)
        self.inflight: dict[str, asyncio.Future] = {}
        self.used_keys: set[str] = set()  # every reply this client used (for the run's cassette)
        self.counts: dict[str, Any] = {
            "requests": 0, "cache_hits": 0, "calls": 0, "ok_calls": 0, "retries": 0, "errors": {},
            "repairs": 0, "prompt_tokens": 0, "completion_tokens": 0,
        }

    # ---- one chat completion, cached ---------------------------------------------------------
    async def complete(self, kind: str, messages: list[dict]) -> tuple[str, bool]:
        """(reply text, came from cache). An identical request is never sent twice."""
        self.counts["requests"] += 1
        record = request_record(self.s.model, prompts.PROMPT_VERSION, messages, self.s.temperature)
        key = cache_key(record)
        self.used_keys.add(key)
        hit = self.cache.get(key)
        if hit is not None:
            self.counts["cache_hits"] += 1
            return hit["reply"], True
        if key in self.inflight:  # the same request is already on its way: share its reply
            self.counts["cache_hits"] += 1
            return await asyncio.shield(self.inflight[key]), True
        if self.s.replay_only:
            raise CacheMiss(f"teacher.replay_only: no cached reply for a {kind} request (key {key[:16]}…)")
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        try:
            reply = await self._call(kind, key, record, messages)
            fut.set_result(reply)
            return reply, False
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self.inflight[key]

    async def _call(self, kind: str, key: str, record: dict, messages: list[dict]) -> str:
        async with self.sem:
            for attempt in range(self.s.max_retries + 1):
                self.counts["calls"] += 1
                try:
                    resp = await self.client.chat.completions.create(
                        model=self.s.model, messages=messages, temperature=self.s.temperature,
                        max_tokens=self.s.max_tokens)
                except self.RETRYABLE as e:
                    name = type(e).__name__
                    self.counts["errors"][name] = self.counts["errors"].get(name, 0) + 1
                    if attempt == self.s.max_retries:
                        if isinstance(e, openai.APIConnectionError) and self.counts["ok_calls"] == 0:
                            raise TeacherUnreachable(
                                f"cannot reach the Teacher at {self.s.base_url} ({name} after {attempt + 1} "
                                "attempts; offline, or a wrong teacher.base_url?)") from None
                        raise TeacherAPIError(f"{name} after {attempt + 1} attempts: {e}") from None
                    self.counts["retries"] += 1
                    await asyncio.sleep(self._delay(attempt, _retry_after(e)))
                    continue
                except openai.AuthenticationError as e:
                    raise TeacherAPIError(f"the Teacher endpoint rejected the API key (HTTP {e.status_code}); "
                                          "check the variable named by teacher.api_key_env") from None
                except openai.APIStatusError as e:
                    name = f"HTTP{e.status_code}"
                    self.counts["errors"][name] = self.counts["errors"].get(name, 0) + 1
                    raise TeacherAPIError(f"HTTP {e.status_code}: {e.message}") from None
                self.counts["ok_calls"] += 1
                reply = (resp.choices[0].message.content if resp.choices else None) or ""
                usage = {"prompt_tokens": getattr(resp.usage, "prompt_tokens", 0) or 0,
                         "completion_tokens": getattr(resp.usage, "completion_tokens", 0) or 0}
                self.counts["prompt_tokens"] += usage["prompt_tokens"]
                self.counts["completion_tokens"] += usage["completion_tokens"]
                self.cache.put(key, record, kind, reply, usage)  # committed before anything else
                return reply
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)], never below Retry-After."""
        jitter = self.rng.uniform(0.0, min(self.s.backoff_max_s, self.s.backoff_base_s * 2 ** attempt))
        return max(jitter, min(retry_after, 600.0)) if retry_after is not None else jitter

    # ---- validated request with one repair ---------------------------------------------------
    async def _validated(self, kind: str, messages: list[dict], parse: Callable[[str], Any]):
        """(value | None, raw reply, cached, error category, error detail)."""
        try:
            reply, cached = await self.complete(kind, messages)
        except TeacherUnreachable:
            raise
        except TeacherAPIError as e:
            return None, None, False, "api_error", str(e)
        try:
            return parse(reply), reply, cached, None, None
        except InvalidReply as e:
            self.counts["repairs"] += 1
            try:
                reply2, cached2 = await self.complete(kind, prompts.repair_messages(messages, reply, str(e)))
            except TeacherUnreachable:
                raise
            except TeacherAPIError as e2:
                return None, reply, False, "api_error", str(e2)
            try:
                return parse(reply2), reply2, cached and cached2, None, None
            except InvalidReply as e2:
                return None, reply2, cached and cached2, "invalid_reply", f"{e}; after repair: {e2}"

    def _image(self, problem: ProblemView) -> str | None:
        return problem.image_data_url() if self.s.vision else None

    async def score(self, item: ScoreItem) -> ScoreResult:
        if not item.sentences:
            return ScoreResult(None, True, "empty_rationale", None, False, "no sentences to score")
        messages = prompts.score_messages(item.problem, item.sentences, self._image(item.problem))
        keys = list(prompts.sentences_object(item.sentences))
        scores, raw, cached, reason, detail = await self._validated("score", messages, lambda r: parse_scores(r, keys))
        return ScoreResult(scores, scores is None, reason, raw, cached, detail)

    async def correct(self, item: CorrectionItem) -> CorrectionResult:
        messages = prompts.correct_messages(item.problem, item.rationale, self._image(item.problem))
        text, raw, cached, reason, detail = await self._validated("correct", messages, parse_correction)
        return CorrectionResult(text, text is None, raw, cached, detail)

    async def judge(self, item: JudgeItem) -> JudgeResult:
        messages = prompts.judge_messages(item.problem, item.rationale_a, item.rationale_b, self._image(item.problem))
        choice, raw, cached, reason, detail = await self._validated("judge", messages, parse_judgement)
        return JudgeResult(choice, raw, cached, detail)

    async def run_many(self, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None = None) -> list:
        done = 0

        async def one(item):
            nonlocal done
            out = await fn(item)
            done += 1
            if progress is not None:
                progress(done, len(items))
            return out

        return list(await asyncio.gather(*(one(i) for i in items)))

    async def aclose(self) -> None:
        await self.client.close()

    def usage(self) -> dict:
        """requests (incl. repairs), cache_hits, calls (HTTP attempts), ok_calls, retries, errors by
        type, repairs, prompt/completion tokens (as the endpoint reports them), cost_usd."""
        c = dict(self.counts, errors=dict(self.counts["errors"]))
        c["cost_usd"] = (c["prompt_tokens"] * self.s.price_input_per_mtok
                         + c["completion_tokens"] * self.s.price_output_per_mtok) / 1e6
        c["model"] = self.s.model
        return c
