"""The Teacher against the local OpenAI-compatible server: faults, bounded concurrency, the cache
(re-runs, kill-and-resume, cassettes, strict replay) and the API key staying out of outputs/."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import datasets
import pytest

from aresnb.config import load_config
from aresnb.paths import RunPaths
from aresnb.teacher import (CacheMiss, CorrectionItem, JudgeItem, ProblemView, ReplyCache, ScoreItem, Teacher,
                            open_teacher, start_local_server)
from aresnb.teacher.endpoints import at_url

N = 60


def _rows(n=N):
    return [dict(qid=f"q{i}", question=f"Which animal number {i} is a mammal?", choices=["shark", "dog", "eagle"],
                 answer=1, hint="", image="", has_image=False, caption="", lecture="",
                 solution="A dog feeds its young milk. A shark is a fish. So the answer is dog.",
                 subject="natural science", grade="grade3", category="", topic="", skill="", task="", split="train",
                 image_record="", features_zeroed=False) for i in range(n)]


def _items(rows):
    sents = ["A dog feeds its young milk.", "Sharks are fish.", "A dog feeds its young milk.", "The answer is (B)."]
    return [ScoreItem(ProblemView.from_row(r), sents[: 2 + i % 3]) for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher") / "dataset"
    datasets.DatasetDict(train=datasets.Dataset.from_list(_rows())).save_to_disk(str(d))
    return d


# A stalled request never answers, so it always times out; a normal reply takes milliseconds. The
# gap between the two is the margin against a loaded machine (make test runs workers side by side).
STALL_TIMEOUT_S = 4.0


def _settings(base_url, **kw):
    base = dict(base_url=base_url, model="reference", api_key="test-key", concurrency=8, max_retries=8,
                timeout_s=5.0, backoff_base_s=0.02, backoff_max_s=0.2)
    return at_url(**{**base, **kw})


def test_faults_30_percent_every_reply_accounted_for(dataset_dir, tmp_path):
    # Which request gets which fault is the seeded plan's (a hash of the body and its repeat
    # count). A stalled request never answers within the test (slow_s far above timeout_s), so
    # every stall is a client time-out whatever the machine's speed; a normal reply takes
    # milliseconds against the 4 s time-out (room for a machine loaded by parallel test workers).
    faults = SimpleNamespace(rate_429=0.10, rate_500=0.10, rate_slow=0.04, rate_malformed=0.03, rate_truncated=0.03,
                             latency_ms=0.0, seed=3, slow_s=3600.0)
    rows = _rows()
    with start_local_server(dataset_dir, faults=faults, log_path=tmp_path / "server.log") as server:
        cache = ReplyCache(tmp_path / "cache.sqlite")
        with Teacher(_settings(server.base_url, timeout_s=STALL_TIMEOUT_S, concurrency=4), cache) as teacher:
            results = teacher.score_sentences(_items(rows))
            usage = teacher.usage()
        stats = server.stats()
        server.proc.kill()  # its stalled handlers would hold a graceful stop for their whole stall
    assert len(results) == N
    for r, item in zip(results, _items(rows)):  # every item is scored, or dropped with a reason
        assert (r.scores is not None and len(r.scores) == len(item.sentences) and not r.dropped) or \
               (r.dropped and r.drop_reason in ("invalid_reply", "api_error") and r.detail)
    assert sum(not r.dropped for r in results) >= 0.8 * N
    # the client counts every HTTP call the server saw; every reply it received is in the attempt log,
    # once; only the valid ones (or a valid repair) are answers, one per item scored; the server
    # answered more only where the client had timed out (a stalled reply arriving late)
    timeouts = usage["errors"].get("APITimeoutError", 0)
    assert usage["calls"] == stats["requests"]
    assert usage["ok_calls"] == len(list(cache.attempts())) <= stats["answered_distinct"]
    assert len(cache) == sum(not r.dropped for r in results)
    assert len(list(cache.attempts("invalid"))) == usage["invalid_replies"] >= usage["repairs"]
    assert 0 <= stats["answered"] - usage["ok_calls"] <= timeouts
    assert usage["retries"] == usage["calls"] - usage["ok_calls"] - sum(r.drop_reason == "api_error" for r in results)
    assert stats["outcomes"].get("429", 0) > 0 and stats["outcomes"].get("500", 0) > 0
    assert stats["outcomes"].get("slow", 0) > 0 and timeouts >= stats["outcomes"]["slow"]  # each stall timed out
    assert stats["outcomes"].get("slow_answered", 0) == 0
    assert usage["repairs"] >= stats["outcomes"].get("malformed", 0) + stats["outcomes"].get("truncated", 0) - 1
    assert stats["max_in_flight"] <= 4 + timeouts  # bounded (+ stalled requests the client gave up on)


def test_a_stalled_request_times_out_and_is_retried(dataset_dir, tmp_path):
    """The fault plan by request index: with one request at a time, requests 1 and 4 stall (for
    longer than the test lasts); each is one client time-out and one retry, nothing else."""
    faults = SimpleNamespace(rate_429=0, rate_500=0, rate_slow=0, rate_malformed=0, rate_truncated=0, latency_ms=0.0,
                             seed=0, slow_s=3600.0, plan=["1:slow", "4:slow"])
    items = _items(_rows(4))
    with start_local_server(dataset_dir, faults=faults) as server:
        with Teacher(_settings(server.base_url, timeout_s=STALL_TIMEOUT_S, concurrency=1), ReplyCache(tmp_path / "c.sqlite")) as t:
            results = t.score_sentences(items)
            usage = t.usage()
        stats = server.stats()
        server.proc.kill()  # the stalled handlers would hold a graceful stop for their whole stall
    assert [len(r.scores) for r in results] == [len(i.sentences) for i in items]
    assert usage["errors"] == {"APITimeoutError": 2} and usage["retries"] == 2
    assert usage["calls"] == stats["requests"] == 6 and stats["answered"] == usage["ok_calls"] == 4
    assert stats["outcomes"]["slow"] == 2


def test_cached_rerun_cassette_and_strict_replay(dataset_dir, tmp_path):
    rows = _rows(20)
    corr = [CorrectionItem(ProblemView.from_row(r), "A dog dog feeds its young milk. It") for r in rows[:3]]
    judge = [JudgeItem(ProblemView.from_row(r), "A dog feeds its young milk.", "The answer is (A).") for r in rows[:3]]
    with start_local_server(dataset_dir) as server:
        with Teacher(_settings(server.base_url), ReplyCache(tmp_path / "a.sqlite")) as t:
            first = t.score_sentences(_items(rows)), t.correct(corr), t.judge(judge)
            assert t.usage()["calls"] == 26
        with Teacher(_settings(server.base_url), ReplyCache(tmp_path / "a.sqlite")) as t:
            again = t.score_sentences(_items(rows)), t.correct(corr), t.judge(judge)
            assert t.usage()["calls"] == 0 and t.usage()["cache_hits"] == 26
        assert server.stats()["requests"] == 26
    assert [r.scores for r in again[0]] == [r.scores for r in first[0]] and all(r.cached for r in again[0])
    # the correction keeps the true sentence, drops the cut-off one, and ends with the conclusion
    assert first[1][0].text == "A dog feeds its young milk. So the answer is dog." and first[2][0].choice == "A"
    # cassette: export, import into an empty cache, replay strictly with no server at all
    assert ReplyCache(tmp_path / "a.sqlite").export(tmp_path / "run.jsonl") == 26
    b = ReplyCache(tmp_path / "b.sqlite")
    b.import_(tmp_path / "run.jsonl")
    with Teacher(_settings("http://127.0.0.1:9/v1", replay_only=True), b) as t:
        replay = t.score_sentences(_items(rows))
        assert [r.raw_reply for r in replay] == [r.raw_reply for r in first[0]] and t.usage()["calls"] == 0
        with pytest.raises(CacheMiss):
            t.score_sentences(_items(_rows(21))[20:])


CLIENT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from aresnb.teacher import ReplyCache, Teacher, ScoreItem, ProblemView
    from aresnb.teacher.endpoints import at_url
    rows = json.load(open({rows!r}))
    items = [ScoreItem(ProblemView.from_row(r), ["A dog feeds its young milk.", "Sharks are fish."]) for r in rows]
    s = at_url(base_url={url!r}, model="reference", api_key="k", concurrency=2)
    with Teacher(s, ReplyCache({cache!r})) as t:
        t.score_sentences(items)
        print(json.dumps(t.usage()))
""")


def test_kill_and_resume_repeats_no_answered_call(dataset_dir, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache = tmp_path / "cache.sqlite"
    faults = SimpleNamespace(rate_429=0, rate_500=0, rate_slow=0, rate_malformed=0, rate_truncated=0,
                             latency_ms=100.0, seed=0, slow_s=0)
    with start_local_server(dataset_dir, faults=faults) as server:
        script = tmp_path / "client.py"
        (tmp_path / "rows.json").write_text(json.dumps(_rows()))
        script.write_text(CLIENT.format(root=root, rows=str(tmp_path / "rows.json"), url=server.base_url, cache=str(cache)))
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
        stored = 0
        deadline = time.monotonic() + 60
        while stored < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
            if cache.exists():
                try:
                    stored = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # requests in flight at the kill still finish on the server: wait until each is answered
        deadline = time.monotonic() + 60
        while (s := server.stats())["answered"] < s["requests"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stored = len(ReplyCache(cache))
        answered_before = server.stats()["answered"]
        assert 8 <= stored < N, "the client should have been killed midway"
        out = subprocess.run([sys.executable, str(script)], stdout=subprocess.PIPE, check=True, text=True).stdout
        usage = json.loads(out.strip().splitlines()[-1])
        stats = server.stats()
    # the resumed run calls exactly for the replies that were not stored: none is asked twice
    assert usage["cache_hits"] == stored and usage["calls"] == N - stored
    assert stats["answered"] - answered_before == N - stored and len(ReplyCache(cache)) == N
    # only requests in flight at the kill (at most `concurrency`) can have been answered twice
    assert stats["answered"] - N <= 2
    assert stats["max_in_flight"] <= 2  # bounded concurrency


def test_api_key_never_written_under_outputs(dataset_dir, tmp_path, monkeypatch):
    secret = "sk-ARESNB-CANARY-7f3e9b1c"
    monkeypatch.setenv("ARESNB_TEACHER_KEY", secret)
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'outputs'}", "run.name=keytest",
                             "teacher.api_key_env=ARESNB_TEACHER_KEY", "teacher.faults.rate_429=0.2"])
    paths = RunPaths(cfg)
    with open_teacher(cfg, paths, dataset_dir=dataset_dir) as t:
        assert t.settings.api_key == secret
        t.score_sentences(_items(_rows(10)))
        t.correct([CorrectionItem(ProblemView.from_row(_rows(1)[0]), "A dog is a mammal.")])
        t.cache.export(paths.teacher_dir / "cassette.jsonl")
    assert (tmp_path / "outputs" / "teacher_cache.sqlite").exists()
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "server.log" for p in files) and len(files) >= 3
    for p in files:
        assert secret.encode() not in p.read_bytes(), f"API key found in {p}"
    assert secret not in repr(t.settings)


def test_server_stops_when_its_starter_is_killed(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys, time; sys.path.insert(0, {root!r}); from aresnb.teacher import start_local_server; "
            "s = start_local_server(); print(s.proc.pid, flush=True); time.sleep(120)")
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server_pid = int(starter.stdout.readline())
    starter.send_signal(signal.SIGKILL)  # no atexit, no cleanup: the server must notice by itself
    starter.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
            with open(f"/proc/{server_pid}/stat") as f:
                if f.read().split()[2] == "Z":  # exited; a zombie until init reaps it
                    return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.2)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("the local Teacher server outlived the process that started it")
