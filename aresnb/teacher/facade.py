"""``open_teacher(cfg, paths, role=...)``: the synchronous Teacher that notebooks and stages use.

The async client runs on its own event loop in a background thread, so the same code works in a
plain script and inside Jupyter/papermill (whose kernel already runs a loop in the main thread).
``role="judge"`` opens the judge's endpoint (``evaluation.judge``: its own base URL, model, key
and prices; each one None = the Teacher's), as ``aresnb.teacher.endpoints`` resolves it.

Scoring while producing: ``submit(item)`` returns a future at once; ``stream(items)`` takes an
iterator that is still being produced (e.g. rationales as generation writes them) and yields the
results in input order, with at most ``max_pending`` requests submitted and not yet yielded.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import os
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterable, Iterator, Sequence

from .cache import ReplyCache
from .backends import ReplyBackend
from .client import AsyncTeacher, CorrectionItem, CorrectionResult, JudgeItem, JudgeResult, ScoreItem, ScoreResult
from .endpoints import Endpoint, endpoint
from .local import LocalServer, start_local_server
from aresnb.config.sections import Config

LOCAL_DUMMY_KEY = "aresnb-local"  # the local server accepts any key


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aresnb-teacher", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class Teacher:
    """Sync facade: ``score_sentences`` / ``correct`` / ``judge`` take lists and keep their order."""

    def __init__(self, settings: Endpoint, cache: ReplyCache, server: LocalServer | None = None,
                 cassette_out: str | Path | None = None, open_backend: Callable[[], ReplyBackend] | None = None):
        self.settings, self.cache, self.server, self.cassette_out = settings, cache, server, cassette_out
        self._loop = _LoopThread()

        async def make() -> AsyncTeacher:
            # the client and an in-process backend are made on the loop they will run on (a backend
            # may bind a session to it)
            backend = open_backend() if open_backend is not None else None
            return AsyncTeacher(settings, cache, backend=backend)

        self._client: AsyncTeacher = self._loop.run(make())
        self._closed = False

    def _many(self, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None) -> list:
        return self._loop.run(self._client.run_many(fn, list(items), progress))

    def score_sentences(self, items: Sequence[ScoreItem], progress=None) -> list[ScoreResult]:
        return self._many(self._client.score, items, progress)

    def correct(self, items: Sequence[CorrectionItem], progress=None) -> list[CorrectionResult]:
        return self._many(self._client.correct, items, progress)

    def judge(self, items: Sequence[JudgeItem], progress=None) -> list[JudgeResult]:
        return self._many(self._client.judge, items, progress)

    def submit(self, item: ScoreItem | CorrectionItem | JudgeItem) -> concurrent.futures.Future:
        """Send one request now; the future's result is its ScoreResult / CorrectionResult / JudgeResult."""
        return asyncio.run_coroutine_threadsafe(self._client.handle(item), self._loop.loop)

    def stream(self, items: Iterable[ScoreItem | CorrectionItem | JudgeItem], max_pending: int = 64) -> Iterator:
        """Results of ``items`` in input order, sent as the iterator produces them.

        At most ``max_pending`` requests are out (submitted, result not yet yielded): when the queue
        is full, the oldest result is waited for before the next item is taken. The Teacher works on
        the background loop while the caller's thread produces the next items (torch releases the
        GIL while generating). An error (a budget stop, an unreachable endpoint) cancels what is left.
        """
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        queue: collections.deque[concurrent.futures.Future] = collections.deque()
        try:
            for item in items:
                queue.append(self.submit(item))
                while queue and (queue[0].done() or len(queue) >= max_pending):
                    yield queue.popleft().result()
            while queue:
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()

    def usage(self) -> dict:
        """Counters since this Teacher opened: requests, cache hits, API calls, retries, tokens, cost."""
        return self._client.usage()

    def export_cassette(self, path: str | Path, merge: bool = True) -> int:
        """Add every reply this Teacher used to a JSONL cassette (replay: teacher.cassette + replay_only)."""
        return self.cache.export(path, keys=self._client.used_keys, merge=merge)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.cassette_out is not None and self._client.used_keys:
                self.export_cassette(self.cassette_out)
            self._loop.run(self._client.aclose())
        finally:
            self._loop.stop()
            if self.server is not None:
                self.server.stop()

    def __enter__(self) -> "Teacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cache_path(cfg: Config) -> Path:
    """teacher.cache_path, or <output_dir>/teacher_cache.sqlite (shared by every run)."""
    if cfg.teacher.cache_path:
        return Path(cfg.teacher.cache_path)
    return cfg.run_dir().parent / "teacher_cache.sqlite"


def endpoint_label(cfg: Config, role: str = "teacher") -> str:
    """Where the role's requests go, for summaries: ``local:<model>`` or the base URL."""
    return endpoint(cfg, role).label


def api_key(cfg: Config, role: str = "teacher") -> str:
    """The key from the environment variable named by the role's api_key_env (never from params)."""
    return _key(endpoint(cfg, role))


def _key(ep: Endpoint) -> str:
    key = os.environ.get(ep.api_key_env)
    if key:
        return key
    if ep.backend.local:
        return LOCAL_DUMMY_KEY
    where = "teacher.api_key_env" if ep.role == "teacher" else "evaluation.judge.api_key_env (or teacher.api_key_env)"
    raise RuntimeError(f"{where} names the environment variable {ep.api_key_env!r}, which is not set; "
                       f"export {ep.api_key_env}=... before running against {ep.base_url}")


def open_teacher(cfg: Config, paths: Any, *, dataset_dir: str | Path | None = None, role: str = "teacher") -> Teacher:
    """The run's Teacher (or, ``role="judge"``, its judge): starts the local server when the
    endpoint's backend is served locally (opens it here when it is called in process), imports
    teacher.cassette.

    On close, every reply it used is added to ``<run>/teacher/cassette.jsonl``: replay the whole
    run offline with ``teacher.cassette=<that file>`` and ``teacher.replay_only=true``.
    """
    ep = endpoint(cfg, role)
    cache = ReplyCache(cache_path(cfg))
    if ep.cassette:
        cache.import_(ep.cassette)
    server, open_backend, base_url = None, None, ep.base_url
    dataset_dir = dataset_dir or paths.dataset_dir
    if ep.backend.in_process and not ep.replay_only:
        open_backend = functools.partial(ep.backend.open, ep.local_backend, str(dataset_dir), ep.reference_error_rate,
                                         ep.seed)
        base_url = f"in-process:{ep.backend.name}"
    elif ep.backend.local and not ep.replay_only:
        errs = ["--error-rate", str(ep.reference_error_rate), "--error-seed", str(ep.seed)] \
            if ep.reference_error_rate else []
        server = start_local_server(dataset_dir=dataset_dir, backend=ep.local_backend, faults=ep.faults,
                                    log_path=paths.teacher_dir / "server.log", extra_args=errs)
        base_url = server.base_url
    settings = ep.connect(base_url or "http://127.0.0.1:9/v1", _key(ep), spend_scope=str(Path(paths.run_dir).resolve()))
    return Teacher(settings, cache, server, cassette_out=paths.teacher_dir / "cassette.jsonl", open_backend=open_backend)
