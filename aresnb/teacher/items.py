"""What is asked of the Teacher and what comes back: the request items, the results, the errors,
and the client's record of one reply (:class:`Reply`).

Plain dataclasses with no I/O, shared by the async client, the facade and the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from .problem import ProblemView


@dataclass
class ScoreItem:
    problem: ProblemView
    sentences: list[str]


@dataclass
class CorrectionItem:
    problem: ProblemView
    rationale: str


@dataclass
class JudgeItem:
    """The caller decides which rationale is shown as Option A (randomise per item)."""
    problem: ProblemView
    rationale_a: str
    rationale_b: str


@dataclass
class ScoreResult:
    scores: list[float] | None
    dropped: bool
    drop_reason: str | None  # None | "empty_rationale" | "invalid_reply" | "api_error"
    raw_reply: str | None
    cached: bool
    detail: str | None = None  # the validation or API error message


@dataclass
class CorrectionResult:
    text: str | None  # None -> keep the original rationale (fallback)
    fallback: bool
    raw_reply: str | None
    cached: bool = False
    detail: str | None = None


@dataclass
class JudgeResult:
    choice: str | None  # "A" | "B" (a forced choice; "tie" only from an endpoint that ignores the schema); None when no valid verdict came back (counted)
    raw_reply: str | None
    cached: bool = False
    detail: str | None = None


class TeacherAPIError(RuntimeError):
    """A request failed after every retry, or with a non-retryable status."""


class TeacherUnreachable(TeacherAPIError):
    """Every attempt failed to connect and nothing ever succeeded: fail the run, do not drop samples."""


class CacheMiss(RuntimeError):
    """teacher.replay_only is set and a request is not in the cache."""


class FormatRejected(Exception):
    """The endpoint answered HTTP 400 to a request with a response_format (try the next mode)."""

    def __init__(self, mode: str, message: str):
        super().__init__(message)
        self.mode = mode


class ModeLowered(Exception):
    """A fallback lowered the client's mode while this request waited: look it up again in the new mode."""


@dataclass
class Reply:
    """One reply text and where it came from: ``cache`` (a validated answer), ``pending`` (paid by a
    killed run, never checked), ``call`` (just received) or ``shared`` (an identical request in flight)."""
    text: str
    key: str
    record: dict
    kind: str
    source: str
    usage: dict
    attempt_id: int | None = None

    @property
    def cached(self) -> bool:
        return self.source != "call"
