"""The synthetic data's grader: the record of what a problem shows and the check that reads it.

Every synthetic problem carries ``image_record``: a JSON record of what its image shows (or of the
text problem's facts) and of its starting thoughts, made by :func:`make_record`.
:func:`check_sentence` checks one sentence's claims against it (True / False / None = nothing
checkable); :func:`grade_sentence` says what the sentence is: a true claim, a false one (a wrong
fact, a conclusion naming a wrong option, no option or a non-option, a self-comparison), one of
the problem's recorded starting thoughts, or nothing checkable at all. The generator
(:mod:`aresnb.data.synthetic`), the reference Teacher and the evaluation's diagnostics import this
module, so the record and its reader stay together. No torch, no PIL: the Teacher's server imports it.
"""

from __future__ import annotations

import json
import re
from typing import Any

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 200, 30)}
OTHER_COLOURS = ("purple", "orange", "pink", "brown", "grey", "gray", "black")  # never drawn: always wrong
SHAPES = ("circle", "square", "triangle")
OTHER_SHAPES = ("star", "hexagon", "pentagon", "oval", "diamond", "heart")
COUNTS = (1, 2, 3)
NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10}
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMAGE_REFS = ["image", "picture", "shape", "shapes", "shown", "there", "it", "this", "object", "objects"]


def make_record(p: dict, family: str = "") -> dict:
    """The machine-readable truth a sentence is checked against, and the family's starting thoughts."""
    letter = LETTERS[p["answer"]]
    record: dict[str, Any] = {"choices": p["choices"], "answer": p["answer_text"], "answer_letter": letter,
                              "family": family, "neutral": [normalise(x) for x in p.get("neutral", [])],
                              # what a teacher who knows the facts would write: the true facts, the conclusion
                              "statements": [*p.get("facts", []), *([p["conclusion"]] if "conclusion" in p else [])]}
    if p.get("objects"):
        record.update(kind="image", objects=p["objects"], facts=p["record_facts"], refs=IMAGE_REFS)
    else:
        record["kind"] = "text" if p["hint"] else "knowledge"
        if "record_facts" in p:
            record["facts"] = p["record_facts"]
        for key in ("refs", "entities", "values", "unit", "predicates", "starts_with"):
            if key in p:
                record[key] = p[key]
    return record


# ------------------------------------------------------------------------------------------
# Checking a sentence against the record
# ------------------------------------------------------------------------------------------

NEGATIONS = ("not", "no", "never", "neither", "nor")
_COLOUR_WORDS = tuple(COLOURS) + OTHER_COLOURS
_SHAPE_RE = re.compile(r"\b(" + "|".join(SHAPES + OTHER_SHAPES) + r")s?\b")
_COLOUR_RE = re.compile(r"\b(" + "|".join(_COLOUR_WORDS) + r")\b")
_NUMBER = r"(\d+|" + "|".join(NUMBER_WORDS) + r")"
_COUNT_RES = [
    # "two red circles", "one triangle"
    re.compile(r"\b" + _NUMBER + r"\s+(?:[a-z]+\s+)?(?:" + "|".join(SHAPES + OTHER_SHAPES + ("shape", "object")) + r")s?\b"),
    re.compile(r"number of (?:circles|shapes|objects) is " + _NUMBER + r"\b"),
]
_ANSWER_RE = re.compile(r"answer\s+(?:is|would be|must be|should be)\s*:?\s*([^.!?;,]*(?:\.\d+)?)")


def normalise(text: str) -> str:
    """Lower case, single spaces, no edge punctuation: how sentences are compared."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", _normalise(text))


def _normalise(text: str) -> str:
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"\bcan't\b|\bcannot\b", "can not", t)
    t = re.sub(r"n't\b", " not", t)
    t = re.sub(r"[\"“”]", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def _negated(text: str, start: int, window: int = 3) -> bool:
    """A negation word among the few words right before position ``start``."""
    before = re.findall(r"[a-z']+", text[:start])[-window:]
    return any(w in NEGATIONS for w in before)


def _num(token: str) -> float | None:
    if token in NUMBER_WORDS:
        return float(NUMBER_WORDS[token])
    try:
        return float(token)
    except ValueError:
        return None


def _attribute_verdicts(t: str, record: dict) -> list[bool]:
    facts = record.get("facts") or {}
    refs = record.get("refs") or []
    if not facts:
        return []
    # An attribute word is a claim about *this* image/thing only when the sentence refers to it
    # ("the shape", "the picture", "Ben's kite"); "A triangle has three sides." claims nothing here.
    refers = any(re.search(rf"\b{re.escape(r)}\b", t) for r in refs) or bool(
        re.search(r"\bthe (" + "|".join(SHAPES + OTHER_SHAPES) + r")s?\b", t))
    verdicts: list[bool] = []
    if refers and "colour" in facts:
        verdicts += _value_verdicts(t, _COLOUR_RE, facts["colour"], skip_after=("background",))
    if refers and "shape" in facts:
        verdicts += _value_verdicts(t, _SHAPE_RE, facts["shape"])
    if "count" in facts:
        for rx in _COUNT_RES:
            for m in rx.finditer(t):
                n = _num(m.group(1))
                if n is not None:
                    verdicts.append((n == facts["count"]) != _negated(t, m.start()))
    return verdicts


def _value_verdicts(t: str, rx: re.Pattern, truth: str, skip_after: tuple[str, ...] = ()) -> list[bool]:
    mentions = []
    for m in rx.finditer(t):
        after = t[m.end():m.end() + 15]
        if any(after.strip().startswith(w) for w in skip_after):
            continue
        mentions.append((m.group(1), _negated(t, m.start())))
    affirmed = {v for v, neg in mentions if not neg}
    if len(affirmed) >= 2:  # "the options are red, blue and green": a list, not a claim
        return []
    return [(v == truth) != neg for v, neg in mentions]


def _entity_spans(t: str, entities: list[str]) -> list[tuple[int, int, str]]:
    spans = []
    for e in entities:
        for m in re.finditer(rf"\b{re.escape(e.lower())}(?:s|es|'s)?\b", t):
            spans.append((m.start(), m.end(), e.lower()))
    return sorted(spans)


def _entity_verdicts(t: str, record: dict) -> list[bool]:
    entities = record.get("entities") or []
    if not entities:
        return []
    spans = _entity_spans(t, entities)
    if not spans:
        return []
    verdicts: list[bool] = []

    def subject_before(pos: int) -> str | None:
        before = [e for s, _, e in spans if s < pos]
        return before[-1] if before else None

    values = {k.lower(): v for k, v in (record.get("values") or {}).items()}
    if values:
        for m in re.finditer(r"(?<![\w.])(\d+(?:\.\d+)?)", t):
            ent = subject_before(m.start())
            if ent in values:
                verdicts.append((float(m.group(1)) == float(values[ent])) != _negated(t, m.start(), 2))
    for phrase, true_for in (record.get("predicates") or {}).items():
        words = phrase.lower().split()
        rx = re.compile(r"\b" + r"\s+(not\s+)?".join(map(re.escape, words)) + r"\b")
        for m in rx.finditer(t):
            ent = subject_before(m.start())
            if ent is None:
                continue
            neg = any(g for g in m.groups()) or _negated(t, m.start(), 2)
            verdicts.append((ent in [x.lower() for x in true_for]) != neg)
    starts = record.get("starts_with") or {}
    for m in re.finditer(r"starts with (?:the letter |an? )?([a-z])\b", t):
        ent = subject_before(m.start())
        if ent in starts:
            verdicts.append((starts[ent] == m.group(1)) != _negated(t, m.start(), 2))
    return verdicts


def _answer_verdicts(t: str, record: dict) -> list[bool]:
    choices = [str(c).lower() for c in record.get("choices") or []]
    answer = str(record.get("answer", "")).lower()
    letter = str(record.get("answer_letter", "")).lower()
    verdicts = []
    for m in _ANSWER_RE.finditer(t):
        claim = m.group(1).strip()
        lm = re.match(r"^\(([a-z])\)|^([a-z])$", claim)
        if lm:
            verdicts.append((lm.group(1) or lm.group(2)) == letter)
            continue
        named = [c for c in choices if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", claim)]
        if named:
            verdicts.append(answer in named and len(named) == 1)
    return verdicts


def check_sentence(sentence: str, record: dict | str | None) -> bool | None:
    """Is one rationale sentence consistent with the problem's record?

    True when its checkable claims (colour / shape / count words about the image or the thing the
    problem is about, numbers and predicates about the problem's entities, "the answer is ...")
    agree with the record; False when any claim contradicts it; None when it makes no checkable
    claim (a general statement, or noise).
    """
    if isinstance(record, str):
        if not record.strip():
            return None
        try:
            record = json.loads(record)
        except json.JSONDecodeError:
            return None
    if not record or not isinstance(sentence, str) or not sentence.strip():
        return None
    t = _normalise(sentence)
    verdicts = _attribute_verdicts(t, record) + _entity_verdicts(t, record) + _answer_verdicts(t, record)
    if not verdicts:
        return None
    return all(verdicts)


# ------------------------------------------------------------------------------------------
# What a sentence is: the rubric's categories
# ------------------------------------------------------------------------------------------

TRUE, FALSE, NEUTRAL, UNVERIFIABLE = "true", "false", "neutral", "unverifiable"
_CONCLUSION = re.compile(r"^so\b|\banswer\s+(?:is|would be|must be|should be)\b")
_THAN = re.compile(r"\b(?:the\s+)?([a-z]+)\s+(?:\w+\s+){1,4}than\s+(?:the\s+)?([a-z]+)\b")


def _record(record: dict | str | None) -> dict | None:
    if isinstance(record, str):
        try:
            return json.loads(record) if record.strip() else None
        except json.JSONDecodeError:
            return None
    return record or None


def is_conclusion(sentence: str) -> bool:
    """Does the sentence state the answer ("So ...", "... the answer is ...")?"""
    return bool(_CONCLUSION.search(_normalise(sentence or "")))


def names_option(sentence: str, option: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(str(option).lower())}(?!\w)", _normalise(sentence)) is not None


def grade_sentence(sentence: str, record: dict | str | None) -> str:
    """``true`` | ``false`` | ``neutral`` | ``unverifiable`` for one sentence of a rationale.

    A conclusion is true only when its claims check and it names the answer; one that names no
    option, a non-option or a wrong option is false. "X is ... than X" compares a thing with
    itself: false. A recorded starting thought is neutral; a sentence with nothing to check that
    is not one of them (a fragment, noise) is unverifiable.
    """
    rec = _record(record)
    if rec is None or not isinstance(sentence, str) or not sentence.strip():
        return UNVERIFIABLE
    t = _normalise(sentence)
    if any(a == b for a, b in _THAN.findall(t)):
        return FALSE
    verdict = check_sentence(sentence, rec)
    if is_conclusion(sentence):
        named = [c for c in rec.get("choices", []) if names_option(sentence, c)]
        right = verdict is not False and names_option(sentence, rec.get("answer", "")) and (
            verdict is True or len(named) == 1)
        return TRUE if right else FALSE
    if verdict is True:
        return TRUE
    if verdict is False:
        return FALSE
    return NEUTRAL if normalise(sentence) in set(rec.get("neutral", [])) else UNVERIFIABLE


def is_relevant(sentence: str, record: dict | str | None) -> bool:
    """Is a true claim about THIS problem -- an option, its image, its hint -- or only a true fact
    of the world ("Paris is a city." when Paris is not an option): true but indirect."""
    rec = _record(record)
    if rec is None:
        return False
    if any(names_option(sentence, c) for c in rec.get("choices", [])):
        return True
    t = _normalise(sentence)
    if rec.get("kind") == "image":
        return bool(_attribute_verdicts(t, rec))
    refs = [r.lower() for r in rec.get("refs") or []] + [str(e).lower() for e in (rec.get("values") or {})]
    return any(re.search(rf"\b{re.escape(r)}\b", t) for r in refs)


def conclusion_verdict(sentences: list[str], record: dict | str | None) -> bool | None:
    """Does the rationale conclude the right answer? The last conclusion it states (None: none)."""
    conclusions = [s for s in sentences if is_conclusion(s)]
    if not conclusions:
        return None
    return grade_sentence(conclusions[-1], record) == TRUE
