"""What a run may spend and how fast: the token estimate, the rate limiter and the budget.

- ``approx_tokens``: about 4 characters per token, the estimate used wherever no tokenizer of the
  provider is at hand (``aresnb estimate``, the budget check, the rate limiter's reservation, the
  local server's usage). Images count ``image_tokens`` each (``teacher.image_tokens``).
- ``RateLimiter``: at most N units in any window of a minute (the window is a parameter), wherever
  it starts, paced by a token bucket holding one second's worth; ``Limits`` takes the requests and
  tokens limits together, at the moment a request is sent. A request's tokens are reserved before
  it is sent (prompt estimate plus ``max_tokens``, as providers count them) and corrected to the
  usage the endpoint reports. Clock and sleep are injectable, so tests run it on a fake clock.
  ``busiest_window``: what the busiest window held (tests and the benchmark count with it).
- ``Budget``: the run's spend so far (read from the cache's attempt log, so every stage of a run
  adds to one total) and the requests in flight; refuses a request whose worst case (prompt
  estimate + ``max_tokens`` of completion) would take the spend past ``teacher.max_cost_usd``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def message_tokens(messages: list[dict], image_tokens: int = 0) -> int:
    """Estimated prompt tokens of chat messages: text at ~4 characters a token, images at ``image_tokens``."""
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    total += image_tokens
                else:
                    total += approx_tokens(part.get("text", ""))
        else:
            total += approx_tokens(str(content or ""))
        total += 4  # role and message framing
    return total


def cost_usd(prompt_tokens: float, completion_tokens: float, price_in: float, price_out: float) -> float:
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


@dataclass
class Grant:
    """What one admission put in a limiter's window: when, and how many units (corrected by ``adjust``)."""

    time: float
    units: float


class RateLimiter:
    """One limit: at most ``limit`` units in any ``window_s`` seconds, wherever the window starts.

    Two rules; a request goes when both let it:
    - the window (the guarantee): a log of what went in the last ``window_s`` seconds; a request
      waits until it fits under ``limit``. A bucket alone cannot promise this: a full bucket plus a
      window's refill is limit + burst (the benchmark measured 1,232 requests a minute under 1,200).
      A request larger than the whole limit waits for an empty window and goes alone.
    - pacing: a token bucket refilled at limit / window_s per second that holds ``burst_s`` of it,
      so requests go out evenly instead of a window's worth at once (providers enforce per-minute
      limits over shorter spans too). A request larger than the bucket waits for a full bucket and
      owes the rest. Over a long run the rate is the limit's.
    The methods take the time; :class:`Limits` drives them on its clock.
    """

    def __init__(self, limit: float, window_s: float = 60.0, burst_s: float = 1.0):
        if limit <= 0:
            raise ValueError(f"a rate limit must be positive, got {limit}")
        self.limit, self.window_s = float(limit), float(window_s)
        self.rate = self.limit / self.window_s
        self.capacity = max(1.0, self.rate * burst_s)
        self.level, self.updated = self.capacity, None
        self.log: deque[Grant] = deque()  # what the window holds, oldest first
        self.in_window = 0.0

    def _advance(self, now: float) -> None:
        """Refill the bucket and drop what has left the window (now - window_s, now]."""
        if self.updated is not None:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        while self.log and self.log[0].time + self.window_s <= now:
            self.in_window -= self.log.popleft().units
        if not self.log:
            self.in_window = 0.0  # no float residue from many corrections

    def wait_s(self, units: float, now: float) -> float:
        """Seconds before ``units`` may go (0: now)."""
        self._advance(now)
        need = min(units, self.capacity)
        bucket = max(0.0, (need - self.level) / self.rate)
        excess = self.in_window + units - self.limit
        if excess <= 0 or not self.log:
            return bucket
        freed = 0.0
        for g in self.log:  # the oldest leave first
            freed += g.units
            if freed >= excess:
                break
        return max(bucket, g.time + self.window_s - now)  # the last one when units > limit: an empty window

    def take(self, units: float, now: float) -> Grant:
        self._advance(now)
        self.level -= units
        grant = Grant(now, units)
        self.log.append(grant)
        self.in_window += units
        return grant

    def adjust(self, grant: Grant, units: float, now: float) -> None:
        """Give back ``units`` of a grant not used (negative: it used more, e.g. a longer prompt than
        estimated; windows already past cannot be undone, so later requests wait for it)."""
        self._advance(now)
        self.level = min(self.capacity, self.level + units)
        grant.units -= units
        if grant.time + self.window_s > now:  # still in the window
            self.in_window -= units


class Limits:
    """The client's rate limits (requests, tokens), taken together: one admission time for all of
    them, the moment the request is sent, first come first served. A request that must wait sleeps
    until the limits would let it go, or until a reply gives reserved units back, whichever is
    first (a waiter that slept through refunds would leave the bucket full and idle). Clock and
    sleep are injectable, so tests run it on a fake clock."""

    def __init__(self, limiters: dict[str, RateLimiter], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.limiters, self.clock, self.sleep = limiters, clock, sleep
        self.waited_s = 0.0
        self._lock: asyncio.Lock | None = None
        self._refunded: asyncio.Event | None = None

    async def acquire(self, **units: float) -> dict[str, Grant]:
        """Wait until every configured limit lets ``units[name]`` go; its grants (limits not set are skipped)."""
        wanted = {name: n for name, n in units.items() if name in self.limiters}
        if not wanted:
            return {}
        if self._lock is None:  # made on the loop that uses them
            self._lock, self._refunded = asyncio.Lock(), asyncio.Event()
        async with self._lock:
            while True:
                now = self.clock()
                wait = max(self.limiters[name].wait_s(n, now) for name, n in wanted.items())
                if wait <= 0:
                    return {name: self.limiters[name].take(n, now) for name, n in wanted.items()}
                # a wait of under a microsecond is float residue (a refill a hair short): added to a
                # clock reading it may not move it, and this loop would spin on the same instant
                await self._pause(max(wait, 1e-6))
                self.waited_s += self.clock() - now

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a refund comes first."""
        self._refunded.clear()
        tasks = [asyncio.ensure_future(self.sleep(seconds)), asyncio.ensure_future(self._refunded.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    def adjust(self, grants: dict[str, Grant], **units: float) -> None:
        now = self.clock()
        for name, n in units.items():
            if name in grants:
                self.limiters[name].adjust(grants[name], n, now)
                if n > 0 and self._refunded is not None:
                    self._refunded.set()


def busiest_window(events: Iterable[tuple[float, float]], window_s: float) -> tuple[float, float | None]:
    """(units, start) of the busiest window [start, start + window_s) over (time, units) events.
    Some busiest window starts at an event, so only those starts are tried."""
    ev = sorted(events)
    best, best_start, total, j = 0.0, None, 0.0, 0
    for i, (start, _) in enumerate(ev):
        while j < len(ev) and ev[j][0] < start + window_s:
            total += ev[j][1]
            j += 1
        if total > best:
            best, best_start = total, start
        total -= ev[i][1]
    return best, best_start


class BudgetExceeded(RuntimeError):
    """teacher.max_cost_usd would be passed: the run stops before that request is sent."""


class Budget:
    def __init__(self, limit_usd: float | None, spent_usd: float = 0.0):
        self.limit, self.spent, self.reserved = limit_usd, spent_usd, 0.0

    def reserve(self, worst_case_usd: float, what: str) -> float:
        """Reserve a request's worst case or raise :class:`BudgetExceeded`; returns what was reserved."""
        if self.limit is not None and self.spent + self.reserved + worst_case_usd > self.limit:
            raise BudgetExceeded(
                f"teacher.max_cost_usd: the run has spent ${self.spent:.4f} (+${self.reserved:.4f} in flight) of its "
                f"${self.limit:.4f} limit, and this {what} request could cost up to ${worst_case_usd:.4f}: stopped "
                "before the spend would pass the limit. Raise teacher.max_cost_usd to go on (replies already paid "
                "are in the cache and cost nothing on a re-run).")
        self.reserved += worst_case_usd
        return worst_case_usd

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)
        self.spent += actual_usd
