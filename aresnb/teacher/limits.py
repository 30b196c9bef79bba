"""What a run may spend and how fast: the token estimate, the rate limiter and the budget.

- ``approx_tokens``: about 4 characters per token, the estimate used wherever no tokenizer of the
  provider is at hand (``aresnb estimate``, the budget check, the rate limiter's reservation, the
  local server's usage). Images count ``image_tokens`` each (``teacher.image_tokens``).
- ``TokenBucket``: holds a rate of N units per minute. It refills continuously at N/60 per second
  and holds one second's worth at most, so no stretch of a minute or more gets more than
  N * (1 + 1/60) units. A request's tokens are reserved before it is sent (prompt estimate plus
  ``max_tokens``, as providers count them) and corrected to the usage the endpoint reports.
  Clock and sleep are injectable, so tests run it on a fake clock.
- ``Budget``: the run's spend so far (read from the cache's attempt log, so every stage of a run
  adds to one total) and the requests in flight; refuses a request whose worst case (prompt
  estimate + ``max_tokens`` of completion) would take the spend past ``teacher.max_cost_usd``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


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


class TokenBucket:
    """``await acquire(n)`` waits until ``n`` units fit in the rate; ``adjust(d)`` returns (or takes) units."""

    def __init__(self, per_minute: float, burst_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.waited_s = 0.0
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, n: float = 1.0) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                need = min(n, self.capacity)  # larger than the bucket: wait for a full one, then owe the rest
                if self.level >= need:
                    self.level -= n
                    return
                wait = (need - self.level) / self.rate
                self.waited_s += wait
                await self.sleep(wait)

    def adjust(self, units: float) -> None:
        """Give back ``units`` reserved but not used (negative: take more, e.g. a reply longer than reserved)."""
        self._refill()
        self.level = min(self.capacity, self.level + units)


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
