"""The reference Teacher: a deterministic, rule-based Teacher that knows the run's dataset.

It answers this project's three prompts in either ``teacher.prompt_style`` (it parses them: they
are ours; both styles get the same rules) by finding the problem
in the dataset (normalised question + options + answer; the image hash breaks ties) and:

- scores, the paper's rubric (``RUBRIC``). A sentence that repeats an earlier one: 0.0. A
  conclusion (it states the answer) that names the right option: 1.0; one that names a wrong
  option, no option or a non-option: 0.0. Synthetic data, by the synthetic grader: a true claim
  naming the answer 1.0, another true claim about this problem (an option, its image, its hint) 0.8,
  a true but indirect statement (a fact of the world that bears on no option) or one of the
  problem's recorded starting thoughts 0.5, a false claim or a self-comparison 0.0, a sentence
  with nothing to check (a fragment, noise) 0.1. Other data: token overlap (F1) with the gold solution's closest
  sentence, ``min(1, 0.1 + 1.2 * F1)`` rounded to 0.1;
- corrections: collapse repeated words, drop repeated and cut-off sentences and fragments,
  replace a false sentence by the closest true statement of the problem (synthetic: its facts and
  conclusion; other data: the gold solution), end with the conclusion when none is there;
- judging, with criteria of its own (``judge_key``), in order: names the correct option; fewer
  false claims; complete and without repetition; more true claims. A forced choice: when they
  cannot separate the two, it picks Option A (a position preference, as LLM judges have; the
  caller randomises the order, so such items split evenly).

It can be made to err on purpose (``error_rate``, ``teacher.reference_error_rate``), as an
imperfect LLM Teacher does: a seeded share of the sentences that make a checkable claim is
mis-graded -- a true claim as false, a false one as true (real data: a score of 0.7 or more as its
mirror image ``1 - score``, one of 0.2 or less likewise) -- and the same belief drives scoring and
correcting: a false sentence it believes true stays in the corrected rationale, a true one it
believes false is replaced by another true statement. Which sentences it gets wrong depends on
the seed, the problem and the sentence alone, so a rerun errs identically. The judge never errs.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from ..data.synthetic_grader import (FALSE, NEUTRAL, TRUE, UNVERIFIABLE, grade_sentence, is_conclusion, is_relevant,
                                     names_option)
from ..text.sentences import is_terminated, sentence_texts
from . import prompts
from .problem import LETTERS, ProblemView, collapse, sha256_hex

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("the a an of to in on and or is are was were be it its this that for with as by at "
                  "from which what so there their they these those not can has have".split())
_REPEATED_WORDS = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.I)
_ANSWER_CLAIM = re.compile(r"answer is \(?([A-Z])\)?")

# Part of every cache key of this Teacher's replies (through its model name, see ``versioned_name``):
# bump it whenever a rule below changes, or a cache would replay the old rules' replies.
RULES_VERSION = "rules-2"


def versioned_name(model: str, error_rate: float = 0.0, error_seed: int = 0) -> str:
    """The model name the reference Teacher's requests (and cache keys) carry: its rules' version and,
    when it errs on purpose, the rate and seed (an erring Teacher's replies are other replies)."""
    errs = f"+errors{error_rate:g}-seed{error_seed}" if error_rate else ""
    return f"{model}@{RULES_VERSION}{errs}"


# The paper's rubric (../shared/design/ares.md section 2), by what the synthetic grader finds.
RUBRIC = {
    "true_about_answer": 1.0,  # correct, and moves the reasoning to the answer (a right conclusion)
    "true_specific": 0.8,  # a true claim about this problem (an option, its image, its hint) not naming the answer
    "true_indirect": 0.5,  # true, but of the world, not of this problem ("Paris is a city." when it is no option)
    NEUTRAL: 0.5,  # a starting thought
    UNVERIFIABLE: 0.1,  # nothing to check, not a starting thought: a fragment, noise
    FALSE: 0.0,  # a wrong claim, a conclusion naming a wrong / no / a non-option, a self-comparison
    "unknown_problem": 0.5,  # the Teacher cannot find the problem: it cannot judge
}


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


# What an erring Teacher believes of a sentence it gets wrong.
_MISGRADED = {TRUE: FALSE, FALSE: TRUE}


class ReferenceTeacher:
    name = "reference"

    def __init__(self, problems: list[ProblemView], error_rate: float = 0.0, error_seed: int = 0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.index: dict[tuple, list[ProblemView]] = {}
        for p in problems:
            self.index.setdefault(self._key(p.question, p.options_text, p.answer_text), []).append(p)
        self._image_hash: dict[str, str] = {}
        self.error_rate, self.error_seed = error_rate, error_seed

    @classmethod
    def from_dataset_dir(cls, dataset_dir: str | Path | None, error_rate: float = 0.0,
                         error_seed: int = 0) -> "ReferenceTeacher":
        if dataset_dir is None or not Path(dataset_dir).exists():
            print(f"reference teacher: no dataset at {dataset_dir}; every problem is unknown", file=sys.stderr)
            return cls([], error_rate, error_seed)
        import datasets  # light: no torch

        dd = datasets.load_from_disk(str(dataset_dir))
        splits = dd.values() if isinstance(dd, datasets.DatasetDict) else [dd]
        return cls([ProblemView.from_row(row) for split in splits for row in split], error_rate, error_seed)

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
        if len(cands) > 1:  # a paper-style request has the raw hint, no context line
            same = ((lambda p: collapse(p.hint) == collapse(fields["hint"])) if fields.get("context") is None
                    else (lambda p: p.context == fields["context"]))
            cands = [p for p in cands if same(p)] or cands
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
            out.append(0.0 if key in seen else self._teacher_score(problem, s))
            seen.add(key)
        return out

    def errs_on(self, problem: ProblemView | None, sentence: str) -> bool:
        """Whether this Teacher mis-grades ``sentence`` of ``problem``: a uniform draw from a hash of
        (seed, problem, sentence) below ``error_rate`` -- the same answer every time it is asked."""
        if not self.error_rate or problem is None:
            return False
        digest = hashlib.sha256(f"{self.error_seed}:{problem.qid}:{_norm(sentence)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.error_rate

    def _teacher_score(self, problem: ProblemView | None, sentence: str) -> float:
        """The score the Teacher gives (in scoring and correcting): the rubric's, wrong where it errs."""
        return self._score_one(problem, sentence, misgrade=self.errs_on(problem, sentence))

    def _score_one(self, problem: ProblemView | None, sentence: str, misgrade: bool = False) -> float:
        """The rubric's score of one sentence; ``misgrade``: believe a checkable claim the wrong way round."""
        if problem is None:
            return RUBRIC["unknown_problem"]
        if problem.record is not None:
            grade = grade_sentence(sentence, problem.record)
            if misgrade:
                grade = _MISGRADED.get(grade, grade)  # neutral and unverifiable sentences claim nothing to get wrong
            if grade == TRUE:
                if is_conclusion(sentence) or names_option(sentence, problem.record.get("answer", "")):
                    return RUBRIC["true_about_answer"]
                return RUBRIC["true_specific"] if is_relevant(sentence, problem.record) else RUBRIC["true_indirect"]
            return RUBRIC[grade]
        claim = self._conclusion_claim(problem, sentence)
        if claim is not None:
            return RUBRIC["true_about_answer"] if claim != misgrade else RUBRIC[FALSE]
        gold = sentence_texts(problem.solution) or [problem.answer_text]
        f1 = max(overlap_f1(sentence, g) for g in gold)
        score = round(min(1.0, 0.1 + 1.2 * f1), 1)
        checkable = score >= 0.7 or score <= 0.2  # what the judge counts as true or false (_judge_grade)
        return round(1.0 - score, 1) if misgrade and checkable else score

    @staticmethod
    def _conclusion_claim(problem: ProblemView, sentence: str) -> bool | None:
        """Real data: does a conclusion name the right option (by letter or text)? None: not one."""
        letter = ReferenceTeacher._answer_claim(problem, sentence)
        if letter is not None:
            return letter
        if not is_conclusion(sentence):
            return None
        named = [i for i, c in enumerate(problem.choices) if names_option(sentence, c)]
        return named == [problem.answer]

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
        truths = self._statements(problem)
        out, seen = [], set()
        for s in sents:
            if _norm(s) in seen:
                continue
            score = self._teacher_score(problem, s)
            if score <= RUBRIC[UNVERIFIABLE]:  # wrong, or a fragment: the closest true statement unused yet
                # (another one than the sentence itself, which an erring Teacher may take for wrong)
                spare = [t for t in truths if _norm(t) not in seen and _norm(t) != _norm(s)]
                if score == RUBRIC[UNVERIFIABLE] and problem.record is not None or not spare:
                    continue  # a fragment says nothing to correct: drop it
                s = max(spare, key=lambda t: overlap_f1(s, t))
            seen.add(_norm(s))
            out.append(s)
        if truths and not any(is_conclusion(s) for s in out) and is_conclusion(truths[-1]):
            out.append(truths[-1])  # a rationale that never concludes is incomplete
        return " ".join(out) or collapse(problem.solution) or f"The answer is {problem.answer_text}."

    def _statements(self, problem: ProblemView) -> list[str]:
        """The true statements a corrector may use: the record's (synthetic) or the gold solution's."""
        if problem.record is not None and problem.record.get("statements"):
            return list(problem.record["statements"])
        return [g for g in sentence_texts(problem.solution) if g]

    def judge_key(self, problem: ProblemView | None, text: str) -> tuple:
        """What the judge compares, in order: names the correct option; fewer false claims;
        complete and without repetition; more true claims about the problem (a true fact that
        bears on no option is padding, not a claim in its favour). Larger is better."""
        sents = sentence_texts(text)
        if not sents:
            return (0, float("-inf"), float("-inf"), 0)
        grades = [self._judge_grade(problem, s) for s in sents]
        conclusions = [g for s, g in zip(sents, grades) if is_conclusion(s)]
        correct = bool(conclusions) and conclusions[-1] == TRUE
        repeats = len(sents) - len({_norm(s) for s in sents})
        unfinished = int(not is_terminated(sents[-1]))
        relevant = sum(g == TRUE and (problem is None or problem.record is None or is_relevant(s, problem.record))
                       for s, g in zip(sents, grades))
        return (int(correct), -grades.count(FALSE), -(repeats + unfinished), relevant)

    def _judge_grade(self, problem: ProblemView | None, sentence: str) -> str:
        if problem is None:
            return UNVERIFIABLE
        if problem.record is not None:
            return grade_sentence(sentence, problem.record)
        score = self._score_one(problem, sentence)  # real data: by overlap with the gold solution
        return TRUE if score >= 0.7 else FALSE if score <= 0.2 else NEUTRAL

    def judge(self, problem: ProblemView | None, a: str, b: str) -> str:
        return "B" if self.judge_key(problem, b) > self.judge_key(problem, a) else "A"

    # ---- a chat request in, the reply text out -------------------------------------------
    async def areply(self, messages: list[dict], max_tokens: int | None = None,
                     response_format: dict | None = None) -> str:
        """The backends' protocol (``aresnb.teacher.backends.ReplyBackend``): it writes the schema's
        JSON whatever the format asks, in microseconds, so it needs neither."""
        return self.reply(messages)

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

