"""Rate limits and the budget, on a fake clock (no timing assertions): the token bucket alone, then
the client holding requests-per-minute against the local server."""

import asyncio
import random

import datasets
import pytest

from aresnb.teacher import ProblemView, ReplyCache, ScoreItem, start_local_server
from aresnb.teacher.client import AsyncTeacher
from aresnb.teacher.endpoints import at_url
from aresnb.teacher.limits import (Budget, BudgetExceeded, Limits, RateLimiter, approx_tokens, busiest_window, cost_usd,
                                   message_tokens)


class FakeClock:
    """Time moves only when someone sleeps; sleeps are recorded."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    async def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def _limits(limit, clock, **kw):
    return Limits({"x": RateLimiter(limit, **kw)}, clock=clock, sleep=clock.sleep)


def test_requests_are_paced_at_the_rate_after_one_second_of_burst():
    clock = FakeClock()
    limits = _limits(120, clock)  # 2 per second, holds 2
    times = []

    async def go():
        for _ in range(6):
            await limits.acquire(x=1)
            times.append(clock.now)

    asyncio.run(go())
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])
    # 6 requests by t=2.0: the burst (2) plus 2 per second, never more
    assert limits.waited_s == pytest.approx(2.0)


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_then_owes():
    clock = FakeClock()
    limits = _limits(600, clock)  # 10 per second, holds 10

    async def go():
        await limits.acquire(x=10)  # the full bucket
        t_full = clock.now
        await limits.acquire(x=25)  # waits until full again (1 s), then owes 15
        t_big = clock.now
        await limits.acquire(x=1)  # the debt (15) and this one are repaid first: 1.6 s
        return t_full, t_big, clock.now

    assert asyncio.run(go()) == pytest.approx((0.0, 1.0, 2.6))


def test_adjust_returns_an_unused_reservation():
    clock = FakeClock()
    limits = _limits(60, clock)  # 1 per second, holds 1

    async def go():
        grants = await limits.acquire(x=1)
        limits.adjust(grants, x=1)  # the request used nothing: the next one goes at once
        grants = await limits.acquire(x=1)
        t0 = clock.now
        limits.adjust(grants, x=-2)  # a reply used 2 more than reserved: 3 s before the next
        await limits.acquire(x=1)
        return t0, clock.now

    assert asyncio.run(go()) == pytest.approx((0.0, 3.0))
    assert asyncio.run(Limits({}).acquire(x=1)) == {}  # no limit set: nothing to wait for
    with pytest.raises(ValueError):
        RateLimiter(0)


# ---- no window holds more than the limit: counted on virtual time -------------------------------


def run_in_virtual_time(main):
    """Run ``main()`` on an event loop whose clock jumps to its next timer instead of waiting for it:
    asyncio.sleep takes no wall time and timers fire in order of their deadlines, so concurrent
    requests, their latencies and the limiter's waits interleave as they would, deterministically.
    (The jump patches the loop's selector: with nothing ready, asyncio waits on it until the next timer.)"""
    loop = asyncio.new_event_loop()
    now = [0.0]
    select = loop._selector.select

    def jump(timeout=None):
        if timeout is None:
            raise RuntimeError("deadlock: nothing scheduled and nothing ready")
        now[0] += timeout
        return select(0)

    loop.time = lambda: now[0]
    loop._selector.select = jump
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_busiest_window_counts_half_open_windows():
    events = [(0.0, 1), (0.5, 2), (1.0, 4), (1.2, 1), (2.5, 3)]
    assert busiest_window(events, 1.0) == (7, 0.5)  # [0.5, 1.5): 2 + 4 + 1; [0, 1) holds 3 only
    assert busiest_window(events, 2.0) == (8, 0.0)  # [0, 2): 1 + 2 + 4 + 1, the first of two with 8
    assert busiest_window(events, 0.1) == (4, 1.0)
    assert busiest_window([], 60.0) == (0.0, None)


def _drive(limiter, n_requests, workers, sizes, latency, refund):
    """``workers`` loops sending ``n_requests`` in all through one limit: request i reserves
    sizes(i) units, its reply comes latency(i) seconds later and gives back refund(i) of them.
    Returns (admission time, units finally used) per request, read on the loop's clock."""
    async def main():
        loop = asyncio.get_running_loop()
        limits = Limits({"x": limiter}, clock=loop.time, sleep=asyncio.sleep)
        queue, events = list(range(n_requests)), []

        async def worker():
            while queue:
                i = queue.pop(0)
                grants = await limits.acquire(x=sizes(i))
                events.append((loop.time(), sizes(i) - refund(i)))
                await asyncio.sleep(latency(i))
                limits.adjust(grants, x=refund(i))

        await asyncio.gather(*(worker() for _ in range(workers)))
        return events
    return run_in_virtual_time(main)


def test_no_window_of_requests_holds_more_than_the_limit_and_throughput_is_the_limit():
    # 20 a window of 1 s (a minute's limit, scaled), a quarter of a window of burst, 8 concurrent
    # senders that always want more: a bucket alone would let the first window hold 5 + 20.
    events = _drive(RateLimiter(20, window_s=1.0, burst_s=0.25), 400, workers=8, sizes=lambda i: 1,
                    latency=lambda i: 0.2, refund=lambda i: 0)
    assert len(events) == 400
    assert busiest_window(events, 1.0)[0] == 20  # never more, and the limit is reached
    for width in (0.5, 2.0, 3.7):  # any window is at most its share of whole windows, rounded up
        assert busiest_window(events, width)[0] <= 20 * -(-width // 1.0)
    # throughput: 400 requests at 20 a second, the first at 0: the last goes before 20 s
    assert events[0][0] == 0.0 and events[-1][0] < 20.0


def _tokens_run(refunds: bool):
    """600 requests of uneven sizes, 16 senders, through 1000 tokens a window of 1 s: (events, tokens a second)."""
    rng = random.Random(0)
    sizes = [rng.randint(20, 400) for _ in range(600)]  # most larger than the bucket (100): they owe
    used = [rng.randint(1, s) if refunds else s for s in sizes]  # a reply gives back what it did not use
    lat = [rng.uniform(0.05, 0.6) for _ in sizes]
    events = _drive(RateLimiter(1000, window_s=1.0, burst_s=0.1), len(sizes), workers=16, sizes=lambda i: sizes[i],
                    latency=lambda i: lat[i], refund=lambda i: sizes[i] - used[i])
    assert sorted(u for _, u in events) == sorted(used)  # every request went, once
    return events, sum(used) / (events[-1][0] + 1.0)  # over the windows the run spans


def test_no_window_of_tokens_holds_more_than_the_limit_with_uneven_sizes_and_refunds():
    events, rate = _tokens_run(refunds=True)
    assert 900 < busiest_window(events, 1.0)[0] <= 1000
    # In flight a request holds its whole reservation (a provider counts max_tokens up front too),
    # so with these replies (half the reservation on average, a third of a window in flight) about
    # 750 a second is the ceiling; a waiter that slept through refunds managed about 450.
    assert rate > 550
    events, rate = _tokens_run(refunds=False)
    assert 900 < busiest_window(events, 1.0)[0] <= 1000 and rate > 0.8 * 1000


def test_a_request_larger_than_the_limit_goes_alone_in_an_empty_window():
    def sizes(i):
        return 50 if i == 3 else 5

    events = _drive(RateLimiter(20, window_s=1.0), 8, workers=1, sizes=sizes, latency=lambda i: 0.0,
                    refund=lambda i: 0)
    big = events[3][0]
    assert [u for t, u in events if big - 1.0 < t < big + 1.0] == [50]  # the window around it holds it alone


def test_budget_refuses_the_request_that_would_cross_the_limit():
    b = Budget(1.0, spent_usd=0.25)
    r = b.reserve(0.5, "score")
    assert b.reserved == 0.5
    with pytest.raises(BudgetExceeded, match=r"spent \$0.2500 \(\+\$0.5000 in flight\) of its \$1.0000 limit"):
        b.reserve(0.3, "score")
    b.settle(r, 0.1)  # the reply cost less than its worst case
    assert b.spent == pytest.approx(0.35) and b.reserved == 0.0
    b.reserve(0.65, "judge")  # exactly at the limit is allowed
    assert Budget(None).reserve(1e9, "x") == 1e9  # no limit


def test_token_estimates():
    assert approx_tokens("") == 0 and approx_tokens("abcd" * 10) == 10
    msgs = [{"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 80},
                                         {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert message_tokens(msgs, image_tokens=100) == 10 + 4 + 20 + 100 + 4
    assert cost_usd(1_000_000, 2_000_000, 0.25, 1.25) == pytest.approx(2.75)


def _row(i):
    return dict(qid=f"q{i}", question=f"Which animal {i} is a mammal?", choices=["shark", "dog"], answer=1,
                hint="", image="", has_image=False, caption="", solution="A dog feeds its young milk.",
                image_record="", features_zeroed=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits") / "dataset"
    datasets.DatasetDict(train=datasets.Dataset.from_list([_row(i) for i in range(8)])).save_to_disk(str(d))
    with start_local_server(d) as s:
        yield s


def test_client_holds_requests_per_minute_on_a_fake_clock(server, tmp_path):
    clock = FakeClock()
    s = at_url(base_url=server.base_url, model="reference", api_key="k", concurrency=8,
                        max_requests_per_minute=60, max_tokens_per_minute=None)
    items = [ScoreItem(ProblemView.from_row(_row(i)), ["A dog feeds its young milk."]) for i in range(5)]

    async def go():
        t = AsyncTeacher(s, ReplyCache(tmp_path / "c.sqlite"), clock=clock, sleep=clock.sleep)
        try:
            results = await t.run_many(t.score, items)
            return results, t.usage()
        finally:
            await t.aclose()

    results, usage = asyncio.run(go())
    assert all(not r.dropped for r in results) and usage["calls"] == 5
    # 1 request per second with 1 of burst: 5 calls need 4 s of waiting on the limiter's clock
    assert clock.now == pytest.approx(4.0) and usage["rate_limit_wait_s"] == pytest.approx(4.0)


def test_client_token_limit_reserves_prompt_plus_max_tokens_and_refunds(server, tmp_path):
    clock = FakeClock()
    s = at_url(base_url=server.base_url, model="reference", api_key="k", concurrency=1, max_tokens=1000,
                        max_tokens_per_minute=60_000)  # 1000 a second, holds 1000
    items = [ScoreItem(ProblemView.from_row(_row(i)), ["A dog feeds its young milk."]) for i in range(3)]

    async def go():
        t = AsyncTeacher(s, ReplyCache(tmp_path / "c.sqlite"), clock=clock, sleep=clock.sleep)
        try:
            await t.run_many(t.score, items)
            return t.usage(), t.limits
        finally:
            await t.aclose()

    usage, limits = asyncio.run(go())
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    # Each request reserves more than the bucket holds (prompt estimate + 1000) and so waits for a
    # full bucket; the refund after each reply leaves exactly the tokens it used owed, so requests
    # 2 and 3 wait used/1000 s each (the three requests are the same length). Without the refund
    # each would owe its whole reservation (> 1 s).
    assert usage["calls"] == 3 and 0 < used < 3 * 1000
    assert clock.now == pytest.approx(limits.waited_s) == pytest.approx(2 * (used / 3) / 1000, rel=0.02)


def test_the_benchmark_counts_the_busiest_window_of_what_reached_the_wire(server, tmp_path):
    import importlib.util

    from aresnb.teacher import Teacher

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("teacher_throughput", ROOT / "benchmarks" / "teacher_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    s = at_url(base_url=server.base_url, model="reference", api_key="k", concurrency=4,
                        max_requests_per_minute=6000)  # 100 a second, holds 100: no wait for 6
    items = [ScoreItem(ProblemView.from_row(_row(i)), [f"Dogs have {i} legs."]) for i in range(6)]
    with Teacher(s, ReplyCache(tmp_path / "c.sqlite")) as teacher:
        sends = bench.record_sends(teacher)
        teacher.score_sentences(items)
        u = teacher.usage()
    assert len(sends) == u["calls"] == 6 and sum(t for _, t in sends) == u["prompt_tokens"] + u["completion_tokens"]
    rows = {f: bench.worst_window(sends, f, 6000) for f in ("max_requests_per_minute", "max_tokens_per_minute")}
    assert rows["max_requests_per_minute"]["busiest_window_sent"] == 6  # all 6 within one minute
    assert rows["max_requests_per_minute"]["busiest_window_ratio"] == 0.001
    assert rows["max_tokens_per_minute"]["busiest_window_sent"] == sum(t for _, t in sends)
    assert rows["max_tokens_per_minute"]["busiest_window_start_s"] == 0.0
