"""Sentence spans of a rationale and the index of each sentence's last token (the aresnb rules).

ARES rewards a rationale sentence by sentence: the Teacher scores sentence j and PPO adds
``score_j - 0.5`` at the token that ends sentence j. Both sides must agree on where sentences
are, so this is the one text splitter of the project (``teacher.sentence_rules: aresnb``; the
paper's rules on T5 token ids are :mod:`aresnb.text.paper_sentences`).

Rules (design notes, section 2): a sentence ends at ``.``, ``!``, ``?``, ``...`` (a run of them,
plus closing quotes/brackets) or at the end of the text, but not

- after an abbreviation such as ``Dr.``, ``Mr.``, ``St.`` (see ``ABBREVIATIONS``),
- after a dotted acronym such as ``D.C.``, ``U.S.A.``, ``e.g.`` (another ``.`` within the word),
- inside a number such as ``1.9`` or any other ``.`` not followed by whitespace,

except that ``word.Next`` (a lowercase word of two or more letters, a dot, then an uppercase
letter) is a boundary: detokenizers sometimes drop the space.
"""

from __future__ import annotations

import bisect
import re
from typing import Any, NamedTuple, Sequence

# Not "no": "The answer is no." ends far more sentences than "No. 5" continues.
ABBREVIATIONS = frozenset("dr mr mrs ms st jr sr prof mt ft vs approx fig".split())
_TERMINALS = ".!?"
_CLOSERS = "\"')]}»”’"
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]$")  # "U.S.A", "D.C", "e.g" (before the last dot)


class Sentence(NamedTuple):
    text: str
    start: int  # character offset of the first character
    end: int  # exclusive: text == source[start:end]


def _word_before(text: str, i: int) -> str:
    """The whitespace-delimited word that ends right before position ``i``."""
    j = i
    while j > 0 and not text[j - 1].isspace():
        j -= 1
    return text[j:i].lstrip(_CLOSERS + "(\"'[")


def _is_boundary(text: str, punct_start: int, punct_end: int) -> bool:
    """Does the terminal run text[punct_start:punct_end] (closers included) end a sentence?"""
    if punct_end >= len(text):
        return True
    nxt = text[punct_end]
    run = text[punct_start:punct_end].rstrip(_CLOSERS)
    if not nxt.isspace():
        # "1.9", "U.S.A", "a.b" are inside a token; "cold.It" lost its space and is a boundary.
        word = _word_before(text, punct_start)
        return run == "." and nxt.isupper() and len(word) >= 2 and word.isalpha() and word[-1].islower()
    if run != ".":
        return True  # "!", "?", "...", "?!" end a sentence
    word = _word_before(text, punct_start)
    if word.lower() in ABBREVIATIONS:
        return False
    if _DOTTED_ACRONYM.search(word):
        return False
    return True


def split_sentences(text: str) -> list[Sentence]:
    """Sentences of ``text`` with character spans; an unterminated tail is the last sentence."""
    out: list[Sentence] = []
    n, i, start = len(text), 0, 0
    while i < n:
        if text[i] in _TERMINALS:
            j = i
            while j < n and text[j] in _TERMINALS:
                j += 1
            while j < n and text[j] in _CLOSERS:
                j += 1
            if _is_boundary(text, i, j):
                _append(out, text, start, j)
                start = j
            i = j
        else:
            i += 1
    _append(out, text, start, n)
    return out


def _append(out: list[Sentence], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append(Sentence(text[start:end], start, end))


def sentence_texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def is_terminated(sentence: str) -> bool:
    """Does the sentence end with terminal punctuation (else it was cut off)?"""
    return sentence.rstrip(_CLOSERS + " ")[-1:] in tuple(_TERMINALS)


def decoded_prefix_lengths(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """Where each token's text ends: ``len(decode(ids[:k+1]))`` for every k (special tokens removed).

    Works on the ids as they were sampled, which need not be the tokenizer's own encoding of
    the text (a sampled sequence can spell a word in pieces the tokenizer would never choose).
    Made non-decreasing, so a token that completes a multi-byte character owns that character.
    """
    if not ids:
        return []
    texts = tokenizer.batch_decode([list(ids[: k + 1]) for k in range(len(ids))], skip_special_tokens=True)
    out, top = [], 0
    for t in texts:
        top = max(top, len(t))
        out.append(top)
    return out


def sentence_end_tokens(tokenizer: Any, ids: Sequence[int], spans: Sequence[Sentence | tuple[int, int]],
                        char_offset: int = 0) -> list[int]:
    """Index into ``ids`` of the token that completes each sentence of ``decode(ids)``.

    ``spans`` are relative to ``decode(ids)[char_offset:]`` (the rationale after "Solution: ").
    An unfinished last sentence (a sample cut at ``max_new_tokens``) ends at its last token.
    """
    lengths = decoded_prefix_lengths(tokenizer, ids)
    if not lengths:
        return [0 for _ in spans]
    out = []
    for span in spans:
        end = (span.end if isinstance(span, Sentence) else span[1]) + char_offset
        out.append(min(bisect.bisect_left(lengths, end), len(lengths) - 1))
    return out
