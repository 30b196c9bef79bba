"""The AI Teacher: prompts, an OpenAI-compatible async client with retries and a reply cache,
the local reference server. Light on purpose: nothing here imports torch or the models."""

from .cache import ReplyCache
from .client import (CacheMiss, CorrectionItem, CorrectionResult, JudgeItem, JudgeResult, ScoreItem, ScoreResult,
                     TeacherAPIError, TeacherSettings, TeacherUnreachable)
from .facade import Teacher, api_key, cache_path, open_teacher
from .local import LocalServer, start_local_server
from .problem import ProblemView
from .prompts import PROMPT_VERSION, prompt_preview

__all__ = [
    "CacheMiss", "CorrectionItem", "CorrectionResult", "JudgeItem", "JudgeResult", "LocalServer", "PROMPT_VERSION",
    "ProblemView", "ReplyCache", "ScoreItem", "ScoreResult", "Teacher", "TeacherAPIError", "TeacherSettings", "TeacherUnreachable",
    "api_key", "cache_path", "open_teacher", "prompt_preview", "start_local_server",
]
