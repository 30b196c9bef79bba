"""The three Teacher requests — sentence scores, correction, judging — as chat messages.

The wording is the project's own, written after the rubric in the design notes (section 2 and 4).
Scoring and correction come in two styles (``teacher.prompt_style``): ``aresnb`` (below) and
``paper`` (:mod:`aresnb.teacher.paper_rubric`: every element of the paper's requests); both keep
the same reply envelope and JSON schema. The judge's request has one wording: evaluators stay fixed.
``PROMPT_VERSION`` is part of every cache key: change any text here and bump it, so that no
reply to an old prompt is ever replayed for a new one. Every reply is JSON only.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from . import paper_rubric
from .problem import LETTERS, ProblemView, collapse

PROMPT_VERSION = "ares-teacher-v1"
SCORE_PLACEHOLDER = "<score>"

SCORE_SYSTEM = """\
You are a strict science teacher grading a student's step-by-step reasoning, one sentence at a time.
You are given a multiple-choice problem (question, context, options, the correct answer and,
when there is one, the image) and the student's sentences as a JSON object.
Give every sentence a score between 0.0 and 1.0 in steps of 0.1:
- about 1.0: the sentence is correct and moves the reasoning towards the correct answer;
- 0.5: the sentence is neutral: a starting thought, or true but only indirectly useful;
- about 0.0: the sentence is wrong, contradicts the problem or the image, or argues for a wrong option;
- 0.0: the sentence repeats an earlier sentence.
Reply with the same JSON object, every placeholder replaced by its score as a number.
Keep the keys exactly as given. Reply with the JSON object only: no other text."""

CORRECT_SYSTEM = """\
You are a science teacher editing a student's explanation of a multiple-choice problem.
You are given the problem (question, context, options, the correct answer and, when there is
one, the image) and the student's rationale. Rules:
- keep sentences that are correct, and starting thoughts, unchanged;
- fix grammar, repeated words and incomplete sentences;
- correct every wrong sentence (do not remove it), using only the information given;
- do not add new reasoning steps beyond what is needed to fix the rationale.
Reply with JSON only, exactly in this form: {"corrected_rationale": "<the corrected rationale>"}"""

JUDGE_SYSTEM = """\
You compare two explanations of the same multiple-choice problem, Option A and Option B.
You are given the problem (question, context, options, the correct answer and, when there is
one, the image). Prefer, in this order: the explanation whose conclusion names the correct
option; then the one with fewer false statements; then the one that is complete and free of
repetition; then the one with more true statements about the problem. Ignore length otherwise.
You must choose one of the two (a forced choice).
Reply with JSON only, exactly in this form: {"better": "A"} or {"better": "B"}"""

REPAIR_TEMPLATE = """\
Your reply could not be used: {error}.
Reply again with the JSON only, following the required format exactly."""

KINDS = {"score": SCORE_SYSTEM, "correct": CORRECT_SYSTEM, "judge": JUDGE_SYSTEM}
PROMPT_STYLES = ("aresnb", "paper")


def check_prompt_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is not one of {PROMPT_STYLES}")


def sentence_key(index: int, sentence: str) -> str:
    """Key of sentence ``index`` (0-based) in the scoring object; the number keeps keys unique."""
    return f"[{index + 1}] {collapse(sentence)}"


def sentences_object(sentences: Sequence[str]) -> dict[str, str]:
    return {sentence_key(i, s): SCORE_PLACEHOLDER for i, s in enumerate(sentences)}


def problem_block(problem: ProblemView) -> str:
    return (
        f"Question: {collapse(problem.question)}\n"
        f"Context: {problem.context}\n"
        f"Options: {problem.options_text}\n"
        f"Correct answer: {problem.answer_text}"
    )


def _user(text: str, image_url: str | None) -> dict[str, Any]:
    if image_url is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": image_url}},
    ]}


def score_messages(problem: ProblemView, sentences: Sequence[str], image_url: str | None = None,
                   style: str = "aresnb") -> list[dict]:
    check_prompt_style(style)
    obj = json.dumps(sentences_object(sentences), ensure_ascii=False)
    if style == "paper":
        return [{"role": "system", "content": paper_rubric.SCORE_SYSTEM},
                _user(paper_rubric.score_text(problem, obj), image_url)]
    text = f"{problem_block(problem)}\nSentences to score (JSON): {obj}"
    return [{"role": "system", "content": SCORE_SYSTEM}, _user(text, image_url)]


def correct_messages(problem: ProblemView, rationale: str, image_url: str | None = None,
                     style: str = "aresnb") -> list[dict]:
    check_prompt_style(style)
    if style == "paper":
        return [{"role": "system", "content": paper_rubric.CORRECT_SYSTEM},
                _user(paper_rubric.correct_text(problem, rationale), image_url)]
    text = f"{problem_block(problem)}\nRationale to correct (JSON string): {json.dumps(collapse(rationale), ensure_ascii=False)}"
    return [{"role": "system", "content": CORRECT_SYSTEM}, _user(text, image_url)]


def judge_messages(problem: ProblemView, rationale_a: str, rationale_b: str, image_url: str | None = None) -> list[dict]:
    text = (
        f"{problem_block(problem)}\n"
        f"Option A (JSON string): {json.dumps(collapse(rationale_a), ensure_ascii=False)}\n"
        f"Option B (JSON string): {json.dumps(collapse(rationale_b), ensure_ascii=False)}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, _user(text, image_url)]


def repair_messages(messages: list[dict], bad_reply: str, error: str) -> list[dict]:
    """The one repair request: the conversation so far, the bad reply, and what was wrong."""
    return [*messages, {"role": "assistant", "content": bad_reply},
            {"role": "user", "content": REPAIR_TEMPLATE.format(error=error)}]


# ---- reading a request back (the reference Teacher parses the prompts it knows) -------------


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")
    return str(content or "")


def message_images(messages: list[dict]) -> list[str]:
    urls = []
    for m in messages:
        if isinstance(m.get("content"), list):
            urls += [p["image_url"]["url"] for p in m["content"] if p.get("type") == "image_url"]
    return urls


def request_kind(messages: list[dict]) -> str | None:
    """'score' | 'correct' | 'judge' for this project's prompts (either style), else None."""
    if not messages or messages[0].get("role") != "system":
        return None
    system = message_text(messages[0])
    return next((k for kinds in (KINDS, paper_rubric.KINDS) for k, v in kinds.items() if v == system), None)


def _sentence_fields(obj: dict) -> dict[str, Any]:
    return {"sentences": [k.split("] ", 1)[1] if k.startswith("[") and "] " in k else k for k in obj],
            "keys": list(obj)}


def _paper_fields(paper: dict[str, Any]) -> dict[str, Any]:
    """A paper-style request's fields in the form of an aresnb one (options and answer lettered),
    plus its raw ``hint`` (it has no context line: the caption is not sent)."""
    view = ProblemView(qid="?", question=paper["question"], choices=tuple(str(c) for c in paper["choices"]), answer=0)
    answer = paper["answer"]
    if answer in view.choices:
        answer = f"({LETTERS[view.choices.index(answer)]}) {collapse(answer)}"
    out: dict[str, Any] = {"question": collapse(paper["question"]), "context": None, "hint": paper["hint"],
                           "options": view.options_text, "answer": answer}
    if "sentences_json" in paper:
        out.update(_sentence_fields(json.loads(paper["sentences_json"])))
    if "rationale" in paper:
        out["rationale"] = paper["rationale"]
    return out


def parse_request(messages: list[dict]) -> dict[str, Any]:
    """Fields of the first user message: question, context, options, answer, and the payload.
    A paper-style request has ``hint`` (raw) and ``context`` None; its options and answer come
    back lettered as in the aresnb style, so that one lookup finds the problem."""
    text = message_text(next(m for m in messages if m.get("role") == "user"))
    paper = paper_rubric.parse_user_text(text)
    if paper is not None:
        return _paper_fields(paper)
    fields: dict[str, Any] = {}
    for line in text.split("\n"):
        head, _, value = line.partition(": ")
        fields[head] = value
    out = {
        "question": fields.get("Question", ""), "context": fields.get("Context", ""),
        "options": fields.get("Options", ""), "answer": fields.get("Correct answer", ""),
    }
    if "Sentences to score (JSON)" in fields:
        out.update(_sentence_fields(json.loads(fields["Sentences to score (JSON)"])))
    if "Rationale to correct (JSON string)" in fields:
        out["rationale"] = json.loads(fields["Rationale to correct (JSON string)"])
    if "Option A (JSON string)" in fields:
        out["a"] = json.loads(fields["Option A (JSON string)"])
        out["b"] = json.loads(fields["Option B (JSON string)"])
    return out


# ---- structured outputs: the JSON schema of each reply -------------------------------------

RESPONSE_FORMATS = ("json_schema", "json_object", "none")  # each one's fallback is the next


def score_schema(keys: Sequence[str]) -> dict[str, Any]:
    """The scoring reply: every sentence key required, each a number in [0, 1], nothing else."""
    return {"type": "object",
            "properties": {k: {"type": "number", "minimum": 0, "maximum": 1} for k in keys},
            "required": list(keys), "additionalProperties": False}


CORRECTION_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"corrected_rationale": {"type": "string"}},
    "required": ["corrected_rationale"], "additionalProperties": False}

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"better": {"type": "string", "enum": ["A", "B"]}},
    "required": ["better"], "additionalProperties": False}

SCHEMA_NAMES = {"score": "sentence_scores", "correct": "corrected_rationale", "judge": "verdict"}


def reply_schema(kind: str, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON schema of a reply of ``kind`` ('score' needs the sentence keys)."""
    if kind == "score":
        if keys is None:
            raise ValueError("a scoring schema needs the sentence keys")
        return score_schema(keys)
    return {"correct": CORRECTION_SCHEMA, "judge": JUDGE_SCHEMA}[kind]


def response_format(mode: str, kind: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``mode`` (None: the field is not sent)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAMES[kind], "strict": True, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object"}
    if mode == "none":
        return None
    raise ValueError(f"response format {mode!r} is not one of {RESPONSE_FORMATS}")


def next_response_format(mode: str) -> str | None:
    """The mode to fall back to after an endpoint rejected ``mode`` (None after 'none')."""
    i = RESPONSE_FORMATS.index(mode)
    return RESPONSE_FORMATS[i + 1] if i + 1 < len(RESPONSE_FORMATS) else None


def prompt_preview(kind: str = "score", style: str = "aresnb") -> str:
    """The prompt text for the notebooks: system message and a user message with placeholders."""
    demo = ProblemView(qid="demo", question="{question}", choices=("{option 1}", "{option 2}"), answer=0,
                       hint="{hint}" if style == "paper" and kind != "judge" else "{hint + caption}")
    msgs = {"score": lambda: score_messages(demo, ["{sentence 1}", "{sentence 2}"], style=style),
            "correct": lambda: correct_messages(demo, "{rationale}", style=style),
            "judge": lambda: judge_messages(demo, "{rationale A}", "{rationale B}")}[kind]()
    label = f"{kind}, {style} style" if kind != "judge" else kind
    return f"# prompt {PROMPT_VERSION} ({label})\n[system]\n{msgs[0]['content']}\n[user]\n{message_text(msgs[1])}"
