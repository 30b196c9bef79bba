"""The AI Teacher: prompts and their JSON schemas, an OpenAI-compatible async client (structured
outputs, retries, rate limits, a budget) with a validated reply cache, the local server (the
reference Teacher, or a small LLM under constrained decoding). Light on purpose: nothing here
imports torch or the models, except the LLM backend inside the server process, lazily."""

from .cache import ReplyCache
from .client import (CacheMiss, CorrectionItem, CorrectionResult, JudgeItem, JudgeResult, ScoreItem, ScoreResult,
                     TeacherAPIError, TeacherSettings, TeacherUnreachable)
from .facade import Teacher, api_key, cache_path, endpoint_config, endpoint_label, open_teacher
from .limits import BudgetExceeded
from .local import LocalServer, start_local_server
from .problem import ProblemView
from .prompts import PROMPT_VERSION, prompt_preview

__all__ = [
    "BudgetExceeded", "CacheMiss", "CorrectionItem", "CorrectionResult", "JudgeItem", "JudgeResult", "LocalServer", "PROMPT_VERSION",
    "ProblemView", "ReplyCache", "ScoreItem", "ScoreResult", "Teacher", "TeacherAPIError", "TeacherSettings", "TeacherUnreachable",
    "api_key", "cache_path", "endpoint_config", "endpoint_label", "open_teacher", "prompt_preview", "start_local_server",
]
