"""Teacher client throughput against the local server with an injected latency per request.

For concurrency 1, 8 and 32: requests per second against the ideal (concurrency / latency) and
their ratio; then the same requests again on the warm cache, where the number of API calls must
be 0. Then the client-side rate limits at concurrency 32 (far more than the limits allow): a
requests-per-minute limit and a tokens-per-minute limit, each alone, for --limit-seconds each
(longer than a minute, so that full minutes are seen); achieved rate = what was sent (requests;
prompt + completion tokens as the server reports them) divided by the wall time from the first
request to the last reply, against the limit; and the busiest minute: the most sent in any
60-second window, wherever it starts (by send time, as a provider counts), against the limit --
the client promises it never passes 1. Writes benchmarks/results/teacher_throughput.json. About
three and a half minutes on 2 cores.

    .venv/bin/python benchmarks/teacher_throughput.py [--latency-ms 200] [--seconds-per-level 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aresnb.io import write_json  # noqa: E402
from aresnb.teacher import ProblemView, ReplyCache, ScoreItem, Teacher, start_local_server  # noqa: E402
from aresnb.teacher.endpoints import at_url  # noqa: E402
from aresnb.teacher.limits import busiest_window  # noqa: E402

WINDOW_S = 60.0  # the client's limits are per minute: any 60 s window


def make_items(n: int, tag: str) -> list[ScoreItem]:
    """n distinct scoring requests (distinct questions: nothing comes from the cache)."""
    items = []
    for i in range(n):
        p = ProblemView(qid=f"{tag}-{i}", question=f"Which of these is a mammal ({tag}, {i})?",
                        choices=("shark", "dog", "eagle"), answer=1, solution="A dog feeds its young milk.")
        items.append(ScoreItem(p, ["A dog feeds its young milk.", "Sharks are fish.", "So the answer is (B)."]))
    return items


def record_sends(teacher: Teacher) -> list[tuple[float, int]]:
    """(monotonic time it was sent, prompt + completion tokens the server reported; 0 if it failed)
    of every HTTP call the Teacher makes from now on: what an endpoint enforcing the limit counts,
    observed at the wire rather than from the limiter's own bookkeeping."""
    sends = []
    completions = teacher._client.client.chat.completions  # the openai client the async core calls
    create = completions.create

    async def timed_create(*args, **kwargs):
        sent, tokens = time.monotonic(), 0
        try:
            resp = await create(*args, **kwargs)
            tokens = resp.usage.prompt_tokens + resp.usage.completion_tokens
            return resp
        finally:
            sends.append((sent, tokens))

    completions.create = timed_create
    return sends


def worst_window(sends: list[tuple[float, int]], field: str, limit: float) -> dict:
    """The busiest WINDOW_S of a run (requests: 1 a call; tokens: as reported) against the limit."""
    events = [(t, 1 if field == "max_requests_per_minute" else tokens) for t, tokens in sends]
    busiest, start = busiest_window(events, WINDOW_S)
    first = min(t for t, _ in sends) if sends else 0.0
    return {"window_s": WINDOW_S, "busiest_window_sent": busiest, "busiest_window_ratio": round(busiest / limit, 4),
            "busiest_window_start_s": round(start - first, 3) if start is not None else None}


def measure_limit(server, work: Path, field: str, limit: float, seconds: float, max_tokens: int) -> dict:
    """Concurrency 32 under one limit: the achieved rate over the whole run and in its busiest minute."""
    per_request = 1.0
    if field == "max_tokens_per_minute":  # calibrate: tokens one request really uses, as reported
        settings = at_url(base_url=server.base_url, model="reference", api_key="bench", concurrency=1,
                                   max_tokens=max_tokens)
        with Teacher(settings, ReplyCache(work / "calibrate.sqlite")) as teacher:
            teacher.score_sentences(make_items(4, "calibrate"))
            u = teacher.usage()
        per_request = (u["prompt_tokens"] + u["completion_tokens"]) / u["ok_calls"]
    n = max(10, round(seconds * limit / 60 / per_request))
    settings = at_url(base_url=server.base_url, model="reference", api_key="bench", concurrency=32,
                               max_tokens=max_tokens, **{field: limit})
    with Teacher(settings, ReplyCache(work / f"cache_{field}.sqlite")) as teacher:
        sends = record_sends(teacher)
        t0 = time.perf_counter()
        results = teacher.score_sentences(make_items(n, field))
        elapsed = time.perf_counter() - t0
        u = teacher.usage()
    sent = u["calls"] if field == "max_requests_per_minute" else u["prompt_tokens"] + u["completion_tokens"]
    achieved = sent / elapsed * 60
    row = {"limit": field, "limit_per_minute": limit, "requests": n, "max_tokens": max_tokens, "seconds": round(elapsed, 3),
           "sent": sent, "achieved_per_minute": round(achieved, 1), "ratio": round(achieved / limit, 4),
           "limiter_wait_s": u["rate_limit_wait_s"], "dropped": sum(r.dropped for r in results),
           **worst_window(sends, field, limit)}
    print(f"{field} {limit:,.0f}: {sent:,} in {elapsed:.2f} s = {achieved:,.1f}/min (ratio {achieved / limit:.3f}); "
          f"busiest {WINDOW_S:.0f} s: {row['busiest_window_sent']:,.0f} (ratio {row['busiest_window_ratio']:.3f})",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds-per-level", type=float, default=4.0, help="ideal duration of each level")
    ap.add_argument("--rpm", type=float, default=1200.0, help="requests-per-minute limit to hold")
    ap.add_argument("--tpm", type=float, default=240_000.0, help="tokens-per-minute limit to hold")
    ap.add_argument("--limit-max-tokens", type=int, default=256, help="max_tokens of the requests under the token limit")
    ap.add_argument("--limit-seconds", type=float, default=75.0,
                    help="ideal duration of each limit run (over a minute: the busiest minute is a full one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_throughput.json"))
    args = ap.parse_args(argv)
    latency = args.latency_ms / 1000
    work = Path(tempfile.mkdtemp(prefix="aresnb-bench-"))
    rows, t_start = [], time.monotonic()
    with start_local_server(None, latency_ms=args.latency_ms, log_path=work / "server.log") as server:
        for c in args.levels:
            n = max(c, round(args.seconds_per_level * c / latency))
            items = make_items(n, f"c{c}")
            settings = at_url(base_url=server.base_url, model="reference", api_key="bench", concurrency=c)
            cache = ReplyCache(work / f"cache_c{c}.sqlite")
            with Teacher(settings, cache) as teacher:
                t0 = time.perf_counter()
                results = teacher.score_sentences(items)
                elapsed = time.perf_counter() - t0
                calls = teacher.usage()["calls"]
            before = server.stats()["requests"]
            with Teacher(settings, cache) as teacher:  # the cached re-run
                t1 = time.perf_counter()
                again = teacher.score_sentences(items)
                rerun_s = time.perf_counter() - t1
                rerun_calls = teacher.usage()["calls"]
            rerun_server = server.stats()["requests"] - before
            assert [r.scores for r in again] == [r.scores for r in results]
            rps, ideal = n / elapsed, c / latency
            rows.append({"concurrency": c, "requests": n, "api_calls": calls, "seconds": round(elapsed, 3),
                         "requests_per_s": round(rps, 2), "ideal_requests_per_s": round(ideal, 2),
                         "ratio": round(rps / ideal, 3), "dropped": sum(r.dropped for r in results),
                         "cached_rerun_api_calls": rerun_calls, "cached_rerun_server_requests": rerun_server,
                         "cached_rerun_seconds": round(rerun_s, 3)})
            print(f"concurrency {c:>3}: {n:>4} requests in {elapsed:6.2f} s = {rps:7.2f} req/s "
                  f"(ideal {ideal:6.1f}, ratio {rps / ideal:.3f}); cached re-run: {rerun_calls} API calls "
                  f"in {rerun_s:.2f} s", flush=True)
        limits = [measure_limit(server, work, "max_requests_per_minute", args.rpm, args.limit_seconds, 1024),
                  measure_limit(server, work, "max_tokens_per_minute", args.tpm, args.limit_seconds,
                                args.limit_max_tokens)]
    result = {"benchmark": "teacher_throughput", "latency_ms": args.latency_ms, "levels": rows,
              "rate_limits": limits,
              "rate_limits_within_5_percent": all(abs(r["ratio"] - 1) <= 0.05 for r in limits),
              "rate_limits_never_passed": all(r["busiest_window_ratio"] <= 1 for r in limits),
              "cached_rerun_calls_total": sum(r["cached_rerun_api_calls"] for r in rows),
              "wall_time_s": round(time.monotonic() - t_start, 2),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0 if result["cached_rerun_calls_total"] == 0 and result["rate_limits_never_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
