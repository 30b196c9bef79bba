"""The paper's scoring and correction requests (``teacher.prompt_style: paper``), in our own words.

ARES's public code sends the Teacher one text per request; this module carries every element of
those texts, worded by this project:

- scoring: the set (question, options, hint, answer, the image when there is one); the reasoning
  as a JSON object whose placeholders get 0.0..1.0 in steps of 0.1; that reasoning may hold the
  starting point of thought, the process of elimination or true statements that do not look
  related at first; ~0.0 completely wrong, 0.5 neutral (the initial thought process, true
  statements that guide later guesses towards the answer), ~1.0 correct or relevant; a repeated
  sentence 0.0; fill the placeholders only and return the JSON only;
- correction: the same set plus the rationale, and seven numbered rules (keep correct sentences
  without alteration; keep starting thoughts; fix grammar and incomplete sentences without outside
  knowledge; correct wrong sentences without removing them; use the options, hint and answer; put
  the result in the given envelope with no explanation; return only that envelope).

What the paper sends differs from the ``aresnb`` style in the data too: the question and the hint
as the dataset has them (no caption, no "N/A", line breaks kept), the options as a list (JSON
here) and the answer as its text, without a letter. The reply keeps this project's envelope
(sentence keys ``"[1] ..."`` with ``"<score>"`` placeholders, ``{"corrected_rationale": ...}``),
so it is constrained by the same JSON schemas and validated the same way.

The layout below is parsed back by :func:`parse_user_text` (the reference Teacher reads it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .problem import ProblemView

SCORE_SYSTEM = """\
You are given a set made of a question, its options, a hint, the correct answer and, when the
question has one, its image. The reasoning written to reach the answer is given as a JSON object
with one key per sentence. Replace every "<score>" placeholder with a value from 0.0 to 1.0, in
steps of 0.1.
The reasoning may contain the starting point of thought, the process of elimination, or true
statements, even where they do not look directly related to the answer at first glance.
A value close to 0.0 means a completely incorrect sentence; 0.5 means a neutral sentence, such as
the initial thought process or true statements that guide later guesses towards the answer; a
value close to 1.0 means a correct or relevant sentence for the question.
If a sentence repeats one that appeared before it, give it 0.0.
Fill in the placeholders only, and return only the JSON object."""

CORRECT_SYSTEM = """\
You review a set made of a question, its options, a hint, the correct answer, a rationale written
for the question and, when the question has one, its image. Follow these 7 rules:
1. Keep every sentence of the original rationale that is correct for the given answer, and carry
it into the corrected rationale without any alteration.
2. Keep every sentence of the original rationale that is a starting point of thought.
3. Fix grammatical errors and incomplete sentences using only the given information, not your own
knowledge.
4. Correct every sentence that is wrong for the given answer, without removing it, using only the
given information.
5. Take the options, the hint and the answer into account throughout.
6. Put the corrected rationale in "corrected_rationale" of the form below, with no explanation.
7. Return only that JSON object: {"corrected_rationale": "<the corrected rationale>"}"""

KINDS = {"score": SCORE_SYSTEM, "correct": CORRECT_SYSTEM}

SCORE_LABEL = "Reasoning to score (JSON)"
CORRECT_LABEL = "Rationale to correct (JSON string)"

_LAYOUT = re.compile(
    r"\AQuestion: (?P<question>.*?)\nOptions: (?P<options>\[.*?\])\nHint: (?P<hint>.*?)\n"
    r"Answer: (?P<answer>.*?)\n(?P<label>" + re.escape(SCORE_LABEL) + "|" + re.escape(CORRECT_LABEL) +
    r"): (?P<payload>.*)\Z", re.S)


def problem_block(problem: ProblemView) -> str:
    """Question, options, hint and answer as the paper gives them: raw text, a list, the answer's text.
    (The options list is JSON, so it stays on one line whatever the choices hold.)"""
    return (f"Question: {problem.question}\n"
            f"Options: {json.dumps(list(problem.choices), ensure_ascii=False)}\n"
            f"Hint: {problem.hint}\n"
            f"Answer: {problem.choices[problem.answer]}")


def score_text(problem: ProblemView, sentences_json: str) -> str:
    return f"{problem_block(problem)}\n{SCORE_LABEL}: {sentences_json}"


def correct_text(problem: ProblemView, rationale: str) -> str:
    return f"{problem_block(problem)}\n{CORRECT_LABEL}: {json.dumps(rationale, ensure_ascii=False)}"


def parse_user_text(text: str) -> dict[str, Any] | None:
    """The fields of a paper-style user message, or None when ``text`` is not one: question, hint,
    choices (list), answer (text) and ``sentences_json`` or ``rationale``."""
    m = _LAYOUT.match(text)
    if m is None:
        return None
    out: dict[str, Any] = {"question": m["question"], "hint": m["hint"], "choices": json.loads(m["options"]),
                           "answer": m["answer"]}
    if m["label"] == SCORE_LABEL:
        out["sentences_json"] = m["payload"]
    else:
        out["rationale"] = json.loads(m["payload"])
    return out
