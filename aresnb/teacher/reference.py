"""The reference Teacher: a deterministic, rule-based Teacher that knows the run's dataset.

It answers this project's three prompts (it parses them: they are ours) by finding the problem
in the dataset (normalised question + options + answer; the image hash breaks ties) and:

- scores: a sentence that repeats an earlier one 0.0. Synthetic data: the synthetic grader's
  ``check_sentence`` against the recorded image content — true and about the answer 1.0, true but
  indirect 0.7, no checkable claim 0.5, false 0.0. Other data: token overlap (F1) with the gold
  solution's closest sentence, ``min(1, 0.1 + 1.2 * F1)`` rounded to 0.1;
- corrections: collapse repeated words, drop repeated and cut-off sentences, replace false
  (synthetic) or off-topic (real data) sentences by the closest gold sentence;
- judging: the rationale with the higher mean score, minus 0.1 per repeated sentence; equal -> tie.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..data.synthetic_grader import check_sentence
from ..sentences import is_terminated, sentence_texts
from . import prompts
from .problem import LETTERS, ProblemView, collapse, sha256_hex

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the a an of to in on and or is are was were be it its this that for with as by at "
                  "from which what so there their they these those not can has have".split())
_REPEATED_WORDS = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.I)
_ANSWER_CLAIM = re.compile(r"answer is \(?([A-Z])\)?")


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(collapse(text).lower()))


def _tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def overlap_f1(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return 0.0
    common = sum(min(ta.count(w), tb.count(w)) for w in set(ta))
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def _mentions(sentence: str, phrase: str) -> bool:
    phrase = _norm(phrase)
    return bool(phrase) and re.search(rf"\b{re.escape(phrase)}\b", _norm(sentence)) is not None


class ReferenceTeacher:
    name = "reference"

    def __init__(self, problems: list[ProblemView]):
        self.index: dict[tuple, list[ProblemView]] = {}
        for p in problems:
            self.index.setdefault(self._key(p.question, p.options_text, p.answer_text), []).append(p)
        self._image_hash: dict[str, str] = {}

    @classmethod
    def from_dataset_dir(cls, dataset_dir: str | Path | None) -> "ReferenceTeacher":
        if dataset_dir is None or not Path(dataset_dir).exists():
            print(f"reference teacher: no dataset at {dataset_dir}; every problem is unknown", file=sys.stderr)
            return cls([])
        import datasets  # light: no torch

        dd = datasets.load_from_disk(str(dataset_dir))
        splits = dd.values() if isinstance(dd, datasets.DatasetDict) else [dd]
        return cls([ProblemView.from_row(row) for split in splits for row in split])

    @staticmethod
    def _key(question: str, options: str, answer: str) -> tuple:
        return (_norm(question), _norm(options), _norm(answer))

    # ---- finding the problem -------------------------------------------------------------
    def find(self, fields: dict, images: list[str]) -> ProblemView | None:
        cands = self.index.get(self._key(fields["question"], fields["options"], fields["answer"]), [])
        if len(cands) > 1 and images:
            want = sha256_hex(images[0])
            by_image = [p for p in cands if self._hash(p) == want]
            cands = by_image or cands
        if len(cands) > 1:
            cands = [p for p in cands if p.context == fields["context"]] or cands
        return cands[0] if cands else None

    def _hash(self, p: ProblemView) -> str | None:
        if p.qid not in self._image_hash:
            try:
                url = p.image_data_url()
            except FileNotFoundError:
                url = None
            self._image_hash[p.qid] = sha256_hex(url) if url else ""
        return self._image_hash[p.qid]

    # ---- the three answers ---------------------------------------------------------------
    def sentence_scores(self, problem: ProblemView | None, sentences: list[str]) -> list[float]:
        seen: set[str] = set()
        out = []
        for s in sentences:
            key = _norm(s)
            out.append(0.0 if key in seen else self._score_one(problem, s))
            seen.add(key)
        return out

    def _score_one(self, problem: ProblemView | None, sentence: str) -> float:
        if problem is None:
            return 0.5
        record = problem.record
        if record is not None:
            verdict = check_sentence(sentence, record)
            if verdict is None:
                verdict = self._answer_claim(problem, sentence)
            if verdict is None:
                return 0.5
            if not verdict:
                return 0.0
            return 1.0 if _mentions(sentence, problem.choices[problem.answer]) else 0.7
        gold = sentence_texts(problem.solution) or [problem.answer_text]
        f1 = max(overlap_f1(sentence, g) for g in gold)
        claim = self._answer_claim(problem, sentence)
        if claim is not None:
            return 1.0 if claim else 0.0
        return round(min(1.0, 0.1 + 1.2 * f1), 1)

    @staticmethod
    def _answer_claim(problem: ProblemView, sentence: str) -> bool | None:
        m = _ANSWER_CLAIM.search(sentence)
        if m is None or LETTERS.find(m.group(1)) >= len(problem.choices):
            return None
        return LETTERS.index(m.group(1)) == problem.answer

    def correct(self, problem: ProblemView | None, rationale: str) -> str:
        text = _REPEATED_WORDS.sub(r"\1", collapse(rationale))
        sents = sentence_texts(text)
        if len(sents) > 1 and not is_terminated(sents[-1]):
            sents = sents[:-1]  # cut off by max_new_tokens: cannot be completed reliably
        elif sents and not is_terminated(sents[-1]):
            sents[-1] += "."
        if problem is None:
            return " ".join(dict.fromkeys(sents)) or rationale
        gold = [g for g in sentence_texts(problem.solution) if g]
        out, seen = [], set()
        for s in sents:
            if _norm(s) in seen:
                continue
            seen.add(_norm(s))
            score = self._score_one(problem, s)
            if score <= 0.2:  # wrong: replace with the closest gold sentence not used yet
                spare = [g for g in gold if _norm(g) not in seen]
                if not spare:
                    continue
                s = max(spare, key=lambda g: overlap_f1(s, g))
                seen.add(_norm(s))
            out.append(s)
        return " ".join(out) or collapse(problem.solution) or f"The answer is {problem.answer_text}."

    def judge(self, problem: ProblemView | None, a: str, b: str) -> str:
        def quality(text: str) -> float:
            sents = sentence_texts(text)
            if not sents:
                return -1.0
            scores = self.sentence_scores(problem, sents)
            repeats = len(sents) - len({_norm(s) for s in sents})
            return sum(scores) / len(scores) - 0.1 * repeats

        qa, qb = quality(a), quality(b)
        return "tie" if abs(qa - qb) < 1e-9 else ("A" if qa > qb else "B")

    # ---- a chat request in, the reply text out -------------------------------------------
    def reply(self, messages: list[dict]) -> str:
        kind = prompts.request_kind(messages)
        if kind is None:
            return json.dumps({"error": "the reference teacher only answers aresnb prompts"})
        fields = prompts.parse_request(messages)
        problem = self.find(fields, prompts.message_images(messages))
        if kind == "score":
            scores = self.sentence_scores(problem, fields["sentences"])
            return json.dumps(dict(zip(fields["keys"], scores)), ensure_ascii=False)
        if kind == "correct":
            return json.dumps({"corrected_rationale": self.correct(problem, fields["rationale"])}, ensure_ascii=False)
        return json.dumps({"better": self.judge(problem, fields["a"], fields["b"])})

