"""Checking Teacher replies: JSON only, the right shape, scores in range.

Rules for sentence scores (each failure returns a reason, which goes into the one repair request
and, if the repair fails too, into ``drop_reason``):

- the reply is one JSON object (a surrounding Markdown code fence is tolerated, other text is not);
- it has exactly one entry per sentence; values are taken in the order of the request's keys
  when the keys match, in reply order otherwise;
- every value is a number (or a numeric string) in [0, 1]; out-of-range values are rejected,
  not clipped;
- scores are rounded to the nearest 0.1 (``round(x * 10) / 10``), the Teacher's stated scale,
  so 0.46 -> 0.5 and 0.04 -> 0.0.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class InvalidReply(ValueError):
    """The reply cannot be used; the message says why (it is sent back in the repair request)."""


def parse_json_reply(reply: str | None) -> Any:
    if reply is None or not reply.strip():
        raise InvalidReply("the reply is empty")
    text = reply.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidReply(f"the reply is not valid JSON ({e.msg} at character {e.pos})") from None


def _score(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise InvalidReply(f"the score of {key!r} is a boolean, not a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidReply(f"the score of {key!r} is {value!r}, not a number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidReply(f"the score of {key!r} is {value!r}, not a number")
    if not 0.0 <= value <= 1.0:
        raise InvalidReply(f"the score of {key!r} is {value}, outside [0, 1]")
    return round(value * 10) / 10


def parse_scores(reply: str | None, keys: Sequence[str]) -> list[float]:
    """One score per sentence key, each in [0, 1], rounded to 0.1; else :class:`InvalidReply`."""
    obj = parse_json_reply(reply)
    if not isinstance(obj, dict):
        raise InvalidReply(f"expected a JSON object with {len(keys)} entries, got {type(obj).__name__}")
    if len(obj) != len(keys):
        raise InvalidReply(f"expected {len(keys)} scores (one per sentence), got {len(obj)}")
    if set(obj) == set(keys):
        return [_score(obj[k], k) for k in keys]
    return [_score(v, k) for k, v in obj.items()]


def parse_correction(reply: str | None) -> str:
    obj = parse_json_reply(reply)
    if not isinstance(obj, dict) or "corrected_rationale" not in obj:
        raise InvalidReply('expected {"corrected_rationale": "..."}')
    text = obj["corrected_rationale"]
    if not isinstance(text, str) or not text.strip():
        raise InvalidReply("corrected_rationale is empty or not a string")
    return text.strip()


def parse_judgement(reply: str | None) -> str:
    """'A' or 'B' (the forced choice the prompt asks for); a 'tie' is accepted and counts as neither
    (a provider that ignores the schema, or a cache written before the choice was forced)."""
    obj = parse_json_reply(reply)
    if not isinstance(obj, dict) or "better" not in obj:
        raise InvalidReply('expected {"better": "A" | "B" | "tie"}')
    choice = str(obj["better"]).strip()
    norm = {"a": "A", "b": "B", "tie": "tie", "option a": "A", "option b": "B"}.get(choice.lower())
    if norm is None:
        raise InvalidReply(f'"better" is {choice!r}, not "A", "B" or "tie"')
    return norm


def check_answer(kind: str, messages: list[dict], reply: str | None) -> str | None:
    """Why a stored reply of ``kind`` to ``messages`` is invalid, or None when it is valid (or of a
    kind this project does not know). The scoring keys are read back from the request."""
    from .prompts import parse_request  # prompts does not import this module: no cycle

    try:
        if kind == "score":
            parse_scores(reply, parse_request(messages).get("keys", []))
        elif kind == "correct":
            parse_correction(reply)
        elif kind == "judge":
            parse_judgement(reply)
    except InvalidReply as e:
        return str(e)
    return None
