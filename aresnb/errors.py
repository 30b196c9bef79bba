"""Errors whose message is the whole story: the runner reports them in one line, no traceback.

A stage notebook raises these; papermill hands the runner only the exception's *name* and
message (the exception itself lives in the kernel), so the runner recognises them by name
(:data:`CLEAR_ERRORS`). Everything else is reported with the failing cell and its error.
"""

from __future__ import annotations


class StageFailed(RuntimeError):
    """A stage ran, but what it produced cannot serve the next stage (all samples dropped, no
    usable correction, ...). The manifest marks the stage failed, so a re-run retries it."""


# Exception class names (as papermill reports them) whose message needs no traceback: the stage
# checks, bad input data, bad parameters, and the Teacher client's own clear failures (an endpoint
# it cannot reach, a miss under strict replay, the teacher.max_cost_usd stop, whose message says
# what was spent and what to raise).
CLEAR_ERRORS = frozenset({"StageFailed", "DataError", "ConfigError", "TeacherUnreachable", "CacheMiss",
                          "BudgetExceeded"})
