"""``open_teacher(cfg, paths)``: the synchronous Teacher that notebooks and stages use.

The async client runs on its own event loop in a background thread, so the same code works in a
plain script and inside Jupyter/papermill (whose kernel already runs a loop in the main thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence

from .cache import ReplyCache
from .client import (AsyncTeacher, CorrectionItem, CorrectionResult, JudgeItem, JudgeResult, ScoreItem,
                     ScoreResult, TeacherSettings)
from .local import LocalServer, start_local_server
from .reference import versioned_name

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

    def __init__(self, settings: TeacherSettings, cache: ReplyCache, server: LocalServer | None = None,
                 cassette_out: str | Path | None = None):
        self.settings, self.cache, self.server, self.cassette_out = settings, cache, server, cassette_out
        self._loop = _LoopThread()

        async def make() -> AsyncTeacher:
            return AsyncTeacher(settings, cache)  # created on the loop it will run on

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


def cache_path(cfg: Any) -> Path:
    """teacher.cache_path, or <output_dir>/teacher_cache.sqlite (shared by every run)."""
    if cfg.teacher.cache_path:
        return Path(cfg.teacher.cache_path)
    return cfg.run_dir().parent / "teacher_cache.sqlite"


def api_key(cfg: Any) -> str:
    """The key from the environment variable named by teacher.api_key_env (never from params)."""
    name = cfg.teacher.api_key_env
    key = os.environ.get(name)
    if key:
        return key
    if cfg.teacher.serve_local:
        return LOCAL_DUMMY_KEY
    raise RuntimeError(f"teacher.api_key_env names the environment variable {name!r}, which is not set; "
                       f"export {name}=... before running against {cfg.teacher.base_url}")


def open_teacher(cfg: Any, paths: Any, *, dataset_dir: str | Path | None = None) -> Teacher:
    """The run's Teacher: starts the local server when teacher.serve_local, imports teacher.cassette.

    On close, every reply it used is added to ``<run>/teacher/cassette.jsonl``: replay the whole
    run offline with ``teacher.cassette=<that file>`` and ``teacher.replay_only=true``.
    """
    t = cfg.teacher
    cache = ReplyCache(cache_path(cfg))
    if t.cassette:
        cache.import_(t.cassette)
    server = None
    base_url = t.base_url
    if t.serve_local and not t.replay_only:
        server = start_local_server(
            dataset_dir=dataset_dir or paths.dataset_dir, backend=t.local_backend, faults=t.faults,
            log_path=paths.teacher_dir / "server.log")
        base_url = server.base_url
    settings = TeacherSettings.from_config(t, base_url or "http://127.0.0.1:9/v1", api_key(cfg), seed=cfg.run.seed)
    if t.serve_local and t.local_backend == "reference":
        # the rule-based Teacher's rules are versioned: a cached reply of older rules is another reply
        settings = dataclasses.replace(settings, model=versioned_name(settings.model))
    return Teacher(settings, cache, server, cassette_out=paths.teacher_dir / "cassette.jsonl")
