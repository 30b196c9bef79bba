"""Text metrics of rationales: repeated sentences, unfinished sentences, repeated words, word diffs.

These measure the failure modes the paper reports after RL alone (repeated words, sentences
that repeat earlier ones, sentences cut off before their end) and what correction + SFT repairs.
Sentences come from ``aresnb.text.sentences.split_sentences`` (the splitter the Teacher's scores use),
so "a sentence" means the same thing in every stage.

Definitions (all case-insensitive, whitespace collapsed):
- repeated sentence: a sentence whose normalised text equals an earlier sentence's in the same
  rationale. ``repeated_sentence_rate`` = repeated sentences / all sentences.
- unfinished sentence: the last sentence of a rationale does not end in ``.``, ``!`` or ``?``
  (optionally followed by closing quotes/brackets) -- it was cut off by the token limit or EOS.
  ``unfinished_sentence_rate`` = rationales ending unfinished / non-empty rationales.
- repeated word: a word equal to the word just before it ("the the").
  ``repeated_word_rate`` = such words / all words.
- sentences per rationale (``mean_sentences``) and ``words_per_sentence`` (all words / all sentences):
  sentence merging, the failure where RL runs sentences together, lowers the first and raises the second.
- edit distance: Levenshtein distance over whitespace-separated words (insert, delete and
  substitute each cost 1).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from aresnb.text.sentences import is_terminated, split_sentences

_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_sentence(text: str) -> str:
    """Key for duplicate detection: lower case, single spaces, no leading/trailing punctuation."""
    return _EDGE_PUNCT.sub("", " ".join(text.lower().split()))


def sentence_texts(text: str) -> list[str]:
    """The rationale's sentences as stripped strings (empty sentences dropped)."""
    return [s.text.strip() for s in split_sentences(text or "") if s.text.strip()]


def dedupe_sentences(text: str) -> tuple[str, int]:
    """Drop every sentence that repeats an earlier one; returns (text, sentences removed).

    The kept sentences are joined by single spaces in their original order and spelling.
    """
    kept, seen, removed = [], set(), 0
    for sentence in sentence_texts(text):
        key = normalize_sentence(sentence)
        if key and key in seen:
            removed += 1
            continue
        seen.add(key)
        kept.append(sentence)
    return " ".join(kept), removed


def count_repeated_sentences(text: str) -> tuple[int, int]:
    """(sentences repeating an earlier one, all sentences) of one rationale."""
    sentences = sentence_texts(text)
    seen, repeated = set(), 0
    for sentence in sentences:
        key = normalize_sentence(sentence)
        if key and key in seen:
            repeated += 1
        seen.add(key)
    return repeated, len(sentences)


def is_unfinished(text: str) -> bool:
    """True when the rationale's last sentence lacks terminal punctuation (an empty one is not)."""
    sentences = sentence_texts(text)
    return bool(sentences) and not is_terminated(sentences[-1])


def words(text: str) -> list[str]:
    """Whitespace tokens, lower-cased and stripped of edge punctuation (empty ones dropped)."""
    out = []
    for token in (text or "").lower().split():
        token = _EDGE_PUNCT.sub("", token)
        if token:
            out.append(token)
    return out


def count_repeated_words(text: str) -> tuple[int, int]:
    """(words equal to the word before them, all words) of one rationale."""
    ws = words(text)
    return sum(1 for a, b in zip(ws, ws[1:]) if a == b), len(ws)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def repeated_sentence_rate(texts: Iterable[str]) -> float:
    """Repeated sentences / all sentences over the rationales (0.0 when there are none)."""
    counts = [count_repeated_sentences(t) for t in texts]
    return _ratio(sum(r for r, _ in counts), sum(n for _, n in counts))


def unfinished_sentence_rate(texts: Iterable[str]) -> float:
    """Share of non-empty rationales whose last sentence is unfinished."""
    texts = [t for t in texts if sentence_texts(t)]
    return _ratio(sum(is_unfinished(t) for t in texts), len(texts))


def repeated_word_rate(texts: Iterable[str]) -> float:
    """Immediately repeated words / all words over the rationales."""
    counts = [count_repeated_words(t) for t in texts]
    return _ratio(sum(r for r, _ in counts), sum(n for _, n in counts))


def rationale_quality(texts: Sequence[str]) -> dict:
    """All degeneration rates of a set of rationales, plus sizes, as one JSON-able dict."""
    texts = list(texts)
    sentence_counts = [len(sentence_texts(t)) for t in texts]
    word_counts = [len(words(t)) for t in texts]
    n = len(texts)
    return {
        "n_rationales": n,
        "repeated_sentence_rate": repeated_sentence_rate(texts),
        "rationales_with_repeated_sentence": _ratio(sum(count_repeated_sentences(t)[0] > 0 for t in texts), n),
        "unfinished_sentence_rate": unfinished_sentence_rate(texts),
        "repeated_word_rate": repeated_word_rate(texts),
        "empty_rate": _ratio(sum(c == 0 for c in sentence_counts), n),
        "mean_sentences": _ratio(sum(sentence_counts), n),  # sentences per rationale
        "mean_words": _ratio(sum(word_counts), n),
        # RL can run sentences together (every sentence end costs reward when most score below 0.5):
        # fewer sentences per rationale with more words each is that failure
        "words_per_sentence": _ratio(sum(word_counts), sum(sentence_counts)),
    }


# ---- word-level differences --------------------------------------------------------------------


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between the whitespace-separated words of ``a`` and ``b``."""
    x, y = (a or "").split(), (b or "").split()
    if len(x) < len(y):
        x, y = y, x
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class DiffOp:
    """One run of a word-level diff: ``op`` is equal | delete | insert | replace."""

    op: str
    old: str
    new: str


def word_diff(old: str, new: str) -> list[DiffOp]:
    """Word-level diff of two texts (difflib on whitespace tokens, original spelling kept)."""
    a, b = (old or "").split(), (new or "").split()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return [DiffOp(tag, " ".join(a[i1:i2]), " ".join(b[j1:j2])) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]
