"""What is asked of the Teacher and what comes back: the request items, the results, the errors.

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
