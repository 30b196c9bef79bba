"""The Teacher client's settings: one endpoint (the Teacher's or the judge's), read from the
``teacher`` section with the endpoint's resolved URL and key (never written anywhere)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TeacherSettings:
    base_url: str
    model: str
    api_key: str = field(repr=False)
    temperature: float = 0.0
    max_tokens: int = 1024
    concurrency: int = 8
    max_retries: int = 6
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    replay_only: bool = False
    vision: bool = True
    response_format: str = "json_schema"
    prompt_style: str = "aresnb"  # the wording of scoring and correction requests (the judge's is one)
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    image_tokens: int = 0
    max_cost_usd: float | None = None
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: float | None = None
    seed: int = 0
    spend_scope: str | None = None  # the run whose spend max_cost_usd bounds (its folder)

    @classmethod
    def from_config(cls, t: Any, base_url: str, api_key: str, seed: int = 0,
                    spend_scope: str | None = None) -> "TeacherSettings":
        names = [f for f in cls.__dataclass_fields__ if f not in ("base_url", "api_key", "seed", "spend_scope")]
        return cls(base_url=base_url, api_key=api_key, seed=seed, spend_scope=spend_scope,
                   **{n: getattr(t, n) for n in names})
