"""The paper's sentence ends, found on T5 token ids (``teacher.sentence_rules: paper``).

ARES's public code (``check_eos``) decides token by token whether a sampled token ends a
sentence, on the ids of T5's SentencePiece vocabulary. The rules, for the token at position i of
a response (the ids after the decoder's start token):

1. ``</s>`` ends a sentence unless the token before it is a terminal piece (rule 4's list), ``.``
   or ``:`` -- so an unfinished last sentence ("... is blue</s>") is ended, and rewarded, by
   ``</s>`` itself; a finished one is not ended twice; "Solution:</s>" is no sentence.
2. ``▁1.`` / ``▁2.`` right after ``▁Pair`` ends a sentence ("Pair 1.").
3. ``.`` after ``com`` ``m`` ``a`` ends a sentence ("comma.", whatever follows).
4. ``.`` or a terminal piece (``!`` ``?`` ``...`` ``....`` ``.....`` ``▁1.`` ``▁2.`` ``).``
   ``1).`` ``2).`` ``...).`` ``”).``) ends a sentence, except
   - right after ``▁Solution`` ``:`` (the target's prefix),
   - the second dot of ``▁D`` ``.`` ``C`` ``.`` when a ``,`` follows ("Washington, D.C., ..."),
   - right after ``▁St``, ``▁Dr``, ``▁Mr`` or ``▁Mrs`` (abbreviations),
   - when a ``.`` is one of the next three tokens ("U.S.A.", "..") or the next token is a number
     piece (digits only: "$2.50" is ``▁$2`` ``.`` ``50``).

Everything else, "Ms." or "U.S." before a short word included, follows from these rules as the
paper has them. A sample cut by ``max_new_tokens`` has no ``</s>``: its unfinished tail has no end
token, so it is neither shown to the Teacher nor rewarded (as in the reference). Sentence j is the
text between end j-1 and end j; a piece with no text (an ``</s>`` first) is no sentence.

The rules name pieces, not numbers: :class:`T5Pieces` finds their ids in the tokenizer and fails,
naming the missing pieces, on a tokenizer that is not T5's (Flan-T5 and Flan-Alpaca share T5's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from aresnb.text.sentences import Sentence, decoded_prefix_lengths

TERMINAL_PIECES = ("!", "?", "...", "....", ".....", "▁1.", "▁2.", ").", "1).", "2).", "...).", "”).")
NUMBERED_PIECES = ("▁1.", "▁2.")  # ended outright after "▁Pair"
ABBREVIATION_PIECES = ("▁St", "▁Dr", "▁Mr", "▁Mrs")
COMMA_WORD_PIECES = ("com", "m", "a")  # "comma" as T5 spells it
DC_PIECES = ("▁D", ".", "C")
OTHER_PIECES = (".", ":", ",", "▁Solution", "▁Pair")
LOOKAHEAD = 3  # a "." within this many next tokens: not an end


@dataclass(frozen=True)
class T5Pieces:
    """The ids of the pieces the rules name, in one tokenizer's vocabulary."""

    eos: int
    period: int
    colon: int
    comma: int
    solution: int
    pair: int
    terminals: frozenset[int]
    numbered: frozenset[int]
    abbreviations: frozenset[int]
    comma_word: tuple[int, ...]
    dc: tuple[int, ...]
    numbers: frozenset[int]

    @classmethod
    def of(cls, tokenizer: Any) -> "T5Pieces":
        """The ids in ``tokenizer``; a ValueError naming what is missing when it is not T5's."""
        vocab = tokenizer.get_vocab()
        wanted = {*TERMINAL_PIECES, *ABBREVIATION_PIECES, *COMMA_WORD_PIECES, *DC_PIECES, *OTHER_PIECES}
        missing = sorted(p for p in wanted if p not in vocab)
        if tokenizer.eos_token != "</s>" or missing:
            raise ValueError(
                "the paper's sentence rules (teacher.sentence_rules: paper) are written on T5's token pieces, "
                f"and this tokenizer ({type(tokenizer).__name__}, eos {tokenizer.eos_token!r}) is not T5's: "
                f"missing {', '.join(missing) or 'nothing, but its eos is not </s>'}. Use a T5-family tokenizer "
                "(model.tokenizer) or teacher.sentence_rules: aresnb")
        ids = lambda pieces: tuple(vocab[p] for p in pieces)  # noqa: E731
        return cls(eos=tokenizer.eos_token_id, period=vocab["."], colon=vocab[":"], comma=vocab[","],
                   solution=vocab["▁Solution"], pair=vocab["▁Pair"], terminals=frozenset(ids(TERMINAL_PIECES)),
                   numbered=frozenset(ids(NUMBERED_PIECES)), abbreviations=frozenset(ids(ABBREVIATION_PIECES)),
                   comma_word=ids(COMMA_WORD_PIECES), dc=ids(DC_PIECES),
                   numbers=frozenset(i for p, i in vocab.items() if p.isascii() and p.isdigit()))


def paper_sentence_ends(ids: Sequence[int], pieces: T5Pieces) -> list[int]:
    """Indices into ``ids`` (a response, without the decoder's start token) of the tokens that end
    a sentence under the paper's rules (module docstring)."""
    ids = [int(t) for t in ids]
    n = len(ids)

    def at(k: int) -> int | None:  # None outside the response: it matches no piece
        return ids[k] if 0 <= k < n else None

    ends = []
    for i, tok in enumerate(ids):
        before = (at(i - 3), at(i - 2), at(i - 1))
        if tok == pieces.eos:
            if before[2] not in pieces.terminals and before[2] not in (pieces.period, pieces.colon):
                ends.append(i)
        elif tok in pieces.numbered and before[2] == pieces.pair:
            ends.append(i)
        elif tok == pieces.period and before == pieces.comma_word:
            ends.append(i)
        elif tok in pieces.terminals or tok == pieces.period:
            if before[1:] == (pieces.solution, pieces.colon):
                continue
            if before == pieces.dc and at(i + 1) == pieces.comma:
                continue
            if before[2] in pieces.abbreviations:
                continue
            if pieces.period in [at(i + k) for k in range(1, LOOKAHEAD + 1)] or at(i + 1) in pieces.numbers:
                continue
            ends.append(i)
    return ends


def paper_sentences(tokenizer: Any, ids: Sequence[int], char_offset: int = 0,
                    pieces: T5Pieces | None = None) -> tuple[list[Sentence], list[int]]:
    """The sentences of a response under the paper's rules and the index of each one's end token.

    Spans are relative to ``decode(ids)[char_offset:]`` (the rationale after "Solution: "), as
    :func:`aresnb.text.sentences.split_sentences` gives them: the text between two end tokens,
    whitespace trimmed. The Teacher scores exactly these sentences; PPO rewards exactly these ends.
    """
    pieces = pieces or T5Pieces.of(tokenizer)
    lengths = decoded_prefix_lengths(tokenizer, ids)
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    sentences, ends, start = [], [], char_offset
    for end in paper_sentence_ends(ids, pieces):
        stop = max(lengths[end], start)
        a, b = start, stop
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        start = stop
        if b > a:
            sentences.append(Sentence(text[a:b], a - char_offset, b - char_offset))
            ends.append(end)
    return sentences, ends
