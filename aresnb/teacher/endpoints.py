"""One endpoint, resolved once from the parameters: the Teacher's (``teacher``) or the judge's.

An :class:`Endpoint` is everything about one endpoint that anything downstream reads: which backend
answers (its record in ``aresnb.teacher.backends``), where (``base_url``; None when the project
answers locally), the model (and the name its requests and cache keys carry), the key's variable, the
prices and image tokens, and how the client asks and paces (format, prompt style, time-outs,
retries, concurrency, rate limits, budget). ``endpoint(cfg, role)`` builds it; the client
(``AsyncTeacher``), the facade (``open_teacher``, ``endpoint_label``, ``api_key``), preflight and
``aresnb estimate`` all read this record, never the sections. The parameter names and defaults stay
where they are documented, in ``TeacherConfig`` and ``JudgeConfig``: the record's fields of the same
names are copied from the sections by name, and it has no defaults of its own.

The judge's rule lives in :func:`_judge_values` alone: each field of ``evaluation.judge`` that is
None is the Teacher's; a judge with a ``base_url`` of its own never uses the local server; the
judge never errs on purpose (``reference_error_rate`` 0). Everything else (format, style, limits,
retries, budget) is the teacher section's for both roles.

``connect`` fills in what is known only when a client opens (the live URL of a local server, the
key read from the environment, the run whose spend the budget bounds); the key is never printed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aresnb.config.sections import Config, JudgeConfig, TeacherConfig

from .backends import Backend, backend_for

ROLES = ("teacher", "judge")
JUDGE_INHERITS = tuple(f.name for f in dataclasses.fields(JudgeConfig))  # each None = the Teacher's


@dataclass(frozen=True)
class Endpoint:
    role: str  # "teacher" | "judge"
    backend: Backend  # who answers: aresnb.teacher.backends
    local_backend: str | None  # teacher.local_backend when the backend is local, else None
    base_url: str | None  # None: the project answers (the local server's URL is known once started)
    model: str  # as configured (teacher.model, or evaluation.judge.model): what the estimate shows
    request_model: str  # sent in every request and part of every cache key: backend.request_model of model
    api_key_env: str
    price_input_per_mtok: float
    price_output_per_mtok: float
    image_tokens: int
    reference_error_rate: float
    seed: int  # run.seed: the retries' jitter, an erring reference Teacher's choice of sentences
    # how the client asks and paces: the teacher section's, whatever the role
    temperature: float
    max_tokens: int
    concurrency: int
    max_retries: int
    timeout_s: float
    backoff_base_s: float
    backoff_max_s: float
    replay_only: bool
    vision: bool
    response_format: str
    prompt_style: str
    max_cost_usd: float | None
    max_requests_per_minute: float | None
    max_tokens_per_minute: float | None
    assumed_latency_s: float
    cassette: str | None
    faults: Any  # TeacherFaultsConfig: the local server's injected faults
    # known when a client opens (connect)
    api_key: str = field(default="", repr=False, compare=False)
    spend_scope: str | None = None  # the run whose spend max_cost_usd bounds (its folder)

    @property
    def serve_local(self) -> bool:
        return self.backend.local

    @property
    def label(self) -> str:
        """Where the requests go, for summaries: ``local:<teacher.local_backend>`` or the base URL."""
        return f"local:{self.local_backend}" if self.backend.local else str(self.base_url)

    def connect(self, base_url: str, api_key: str, spend_scope: str | None = None) -> "Endpoint":
        """This endpoint as one client opens it."""
        return dataclasses.replace(self, base_url=base_url, api_key=api_key, spend_scope=spend_scope)


# the record's fields read from the teacher section by name (everything but what resolution decides)
SECTION_FIELDS = tuple(f.name for f in dataclasses.fields(Endpoint)
                       if f.name in TeacherConfig.__dataclass_fields__ and f.name != "local_backend")


def _judge_values(values: dict, teacher: Any, judge: Any) -> tuple[dict, bool]:
    """(the judge's values, whether the local server answers it), from the Teacher's: THE rule."""
    own = {name: getattr(judge, name) for name in JUDGE_INHERITS if getattr(judge, name) is not None}
    own_url = judge.base_url is not None and judge.base_url != teacher.base_url
    return {**values, **own, "reference_error_rate": 0.0}, teacher.serve_local and not own_url


def _record(role: str, values: dict, serve_local: bool, spec: str, seed: int) -> Endpoint:
    backend = backend_for(serve_local, spec)
    return Endpoint(**{**values, "base_url": None if backend.local else values["base_url"]}, role=role,
                    backend=backend, local_backend=spec if backend.local else None, seed=seed,
                    request_model=backend.request_model(values["model"], values["reference_error_rate"], seed))


def endpoint(cfg: Config, role: str = "teacher") -> Endpoint:
    """The ``role``'s endpoint under the parameters ``cfg`` (``teacher`` or ``judge``)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    t = cfg.teacher
    values, serve_local = {name: getattr(t, name) for name in SECTION_FIELDS}, t.serve_local
    if role == "judge":
        values, serve_local = _judge_values(values, t, cfg.evaluation.judge)
    return _record(role, values, serve_local, t.local_backend, cfg.run.seed)


def at_url(base_url: str, api_key: str = "", *, seed: int = 0, spend_scope: str | None = None,
           **teacher: Any) -> Endpoint:
    """A remote endpoint at ``base_url`` under the teacher section's defaults but for ``teacher``
    (tests and benchmarks that start their own server). The model is sent as given."""
    t = dataclasses.replace(TeacherConfig(), serve_local=False, base_url=base_url, **teacher)
    values = {name: getattr(t, name) for name in SECTION_FIELDS}
    return _record("teacher", values, False, t.local_backend, seed).connect(base_url, api_key, spend_scope)
