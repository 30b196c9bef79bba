"""Rate limits and the budget, on a fake clock (no timing assertions): the token bucket alone, then
the client holding requests-per-minute against the local server."""

import asyncio

import datasets
import pytest

from aresnb.teacher import ProblemView, ReplyCache, ScoreItem, start_local_server
from aresnb.teacher.client import AsyncTeacher, TeacherSettings
from aresnb.teacher.limits import Budget, BudgetExceeded, TokenBucket, approx_tokens, cost_usd, message_tokens


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


def test_bucket_spaces_requests_at_the_rate_after_one_second_of_burst():
    clock = FakeClock()
    bucket = TokenBucket(120, clock=clock, sleep=clock.sleep)  # 2 per second, holds 2
    times = []

    async def go():
        for _ in range(6):
            await bucket.acquire(1)
            times.append(clock.now)

    asyncio.run(go())
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])
    # 6 requests by t=2.0: the burst (2) plus 2 per second, never more
    assert bucket.waited_s == pytest.approx(2.0)


def test_bucket_request_larger_than_capacity_waits_for_a_full_bucket_then_owes():
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10 per second, holds 10

    async def go():
        await bucket.acquire(10)  # the full bucket
        t_full = clock.now
        await bucket.acquire(25)  # waits until full again (1 s), then owes 15
        t_big = clock.now
        await bucket.acquire(1)  # the debt (15) and this one are repaid first: 1.6 s
        return t_full, t_big, clock.now

    assert asyncio.run(go()) == pytest.approx((0.0, 1.0, 2.6))


def test_bucket_adjust_returns_unused_reservation():
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # 1 per second, holds 1

    async def go():
        await bucket.acquire(1)
        bucket.adjust(1)  # the request used nothing: the next one goes at once
        await bucket.acquire(1)
        t0 = clock.now
        bucket.adjust(-2)  # a reply used 2 more than reserved: 3 s before the next
        await bucket.acquire(1)
        return t0, clock.now

    assert asyncio.run(go()) == pytest.approx((0.0, 3.0))
    with pytest.raises(ValueError):
        TokenBucket(0)


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
    s = TeacherSettings(base_url=server.base_url, model="reference", api_key="k", concurrency=8,
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
    s = TeacherSettings(base_url=server.base_url, model="reference", api_key="k", concurrency=1, max_tokens=1000,
                        max_tokens_per_minute=60_000)  # 1000 a second, holds 1000
    items = [ScoreItem(ProblemView.from_row(_row(i)), ["A dog feeds its young milk."]) for i in range(3)]

    async def go():
        t = AsyncTeacher(s, ReplyCache(tmp_path / "c.sqlite"), clock=clock, sleep=clock.sleep)
        try:
            await t.run_many(t.score, items)
            return t.usage(), t.token_limit
        finally:
            await t.aclose()

    usage, bucket = asyncio.run(go())
    used = usage["prompt_tokens"] + usage["completion_tokens"]
    # Each request reserves more than the bucket holds (prompt estimate + 1000) and so waits for a
    # full bucket; the refund after each reply leaves exactly the tokens it used owed, so requests
    # 2 and 3 wait used/1000 s each (the three requests are the same length). Without the refund
    # each would owe its whole reservation (> 1 s).
    assert usage["calls"] == 3 and 0 < used < 3 * 1000
    assert clock.now == pytest.approx(bucket.waited_s) == pytest.approx(2 * (used / 3) / 1000, rel=0.02)
