"""The AI Teacher: prompts and their JSON schemas, an OpenAI-compatible async client (structured
outputs, retries, rate limits, a budget) with a validated reply cache, the local server (the
reference Teacher, or a small LLM under constrained decoding), the backends' registry and the
endpoint record. Light on purpose: nothing here imports torch or the models, except the LLM
backend inside the server process, lazily.

The names below are imported on first use (PEP 562), not when the package is: the parameters'
check asks ``aresnb.teacher.backends`` which Teacher a run has, and config loads on the GPU
machine, whose image has no openai (``tests/test_gpu_carry.py``); the client imports openai.
"""

import importlib
from typing import Any

_WHERE = {  # name -> the module that defines it
    "ReplyCache": "cache",
    "CacheMiss": "items", "CorrectionItem": "items", "CorrectionResult": "items", "JudgeItem": "items",
    "JudgeResult": "items", "ScoreItem": "items", "ScoreResult": "items", "TeacherAPIError": "items",
    "TeacherUnreachable": "items",
    "Backend": "backends", "ReplyBackend": "backends",
    "Endpoint": "endpoints", "endpoint": "endpoints",
    "Teacher": "facade", "api_key": "facade", "cache_path": "facade", "endpoint_label": "facade",
    "open_teacher": "facade",
    "BudgetExceeded": "limits",
    "LocalServer": "local", "start_local_server": "local",
    "ProblemView": "problem",
    "PROMPT_VERSION": "prompts", "prompt_preview": "prompts",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
