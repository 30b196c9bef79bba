"""The paper's sentence ends on Flan-T5 token ids (teacher.sentence_rules: paper): every rule on
hand-written piece sequences, the sentences and end tokens stage 03 keeps, and a clear failure on
a tokenizer that is not T5's."""

import pytest

from aresnb.config import ConfigError, load_config
from aresnb.data.prompts import solution_start
from aresnb.model.tokenizer import train_bpe_tokenizer
from aresnb.paths import RunPaths
from aresnb.rl.rollouts import sentence_layout
from aresnb.stages import teacher_scores
from aresnb.text.paper_sentences import T5Pieces, paper_sentence_ends, paper_sentences

from conftest import shared_path


@pytest.fixture(scope="module")
def t5():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_path("tokenizers", "flan-t5")))


@pytest.fixture(scope="module")
def pieces(t5):
    return T5Pieces.of(t5)


def ends(t5, pieces, seq):
    """End indices of a sequence written as pieces (each must be one Flan-T5 token)."""
    ids = t5.convert_tokens_to_ids(seq)
    assert t5.unk_token_id not in ids, [p for p, i in zip(seq, ids) if i == t5.unk_token_id]
    return paper_sentence_ends(ids, pieces)


def test_the_pieces_are_the_ids_the_reference_names(pieces):
    # the numbers ARES's check_eos compares against, in T5's vocabulary
    assert (pieces.eos, pieces.period, pieces.colon, pieces.comma, pieces.solution, pieces.pair) == (1, 5, 10, 6, 17942, 25072)
    assert pieces.terminals == {55, 58, 233, 2824, 9374, 1300, 1682, 137, 13883, 15070, 16463, 16937}
    assert pieces.numbered == {1300, 1682} and pieces.abbreviations == {472, 707, 1363, 8667}
    assert pieces.comma_word == (287, 51, 9) and pieces.dc == (309, 5, 254)
    # its number list is every piece made only of digits: 326 of them, "0".."9" to "9001"
    assert len(pieces.numbers) == 326 and {536, 357, 519, 1752} <= pieces.numbers  # "1", "2", "3", "50"


S = "▁Solution"


@pytest.mark.parametrize("seq,expected", [
    # rule 1: </s> ends an unfinished sentence, not a finished one, not "Solution:"; first </s> ends one
    ([S, ":", "▁It", "▁is", "▁red", "</s>"], [5]),
    ([S, ":", "▁It", "▁is", "▁red", ".", "</s>"], [5]),
    ([S, ":", "</s>"], []),
    ([S, ":", "▁Wow", "!", "</s>"], [3]),
    ([S, ":", "▁(", "B", ").", "</s>"], [4]),
    (["</s>"], [0]),
    # rule 2: "Pair 1." / "Pair 2." end a sentence even with a "." right after; "Step 1." does not then
    (["▁Pair", "▁1.", "▁Mr", ".", "▁Lee", "."], [1, 5]),
    (["▁Pair", "▁2.", "▁It", "."], [1, 3]),
    (["▁Step", "▁1.", "▁Mr", ".", "▁Lee", "."], [5]),
    (["▁Step", "▁1.", "▁It", "▁is", "▁red", "."], [1, 5]),
    # rule 3: "comma." ends a sentence whatever follows
    (["▁Use", "▁", "a", "▁", "com", "m", "a", ".", "▁Mr", ".", "▁Lee", "."], [7, 11]),
    # rule 4: every terminal piece
    (["▁Hi", "!", "▁Was", "▁it", "?", "▁Wait", "...", "▁So", "....", "▁Oh", ".....", "▁Yes", "▁it", "▁is", "."],
     [1, 4, 6, 8, 10, 14]),
    (["▁(", "B", ").", "▁", "a", "▁", "1).", "▁", "b", "▁", "2).", "▁", "c", "▁", "...).", "▁", "d", "▁“", "n", "o", "”)."],
     [2, 6, 10, 14, 20]),
    # ... not right after "Solution:" (the model wrote "Solution: ." with no space piece)
    ([S, ":", ".", "▁It", "▁is", "▁red", "."], [6]),
    # ... not the second dot of "D.C.," -- but "D.C." before a word is an end when no "." follows soon
    (["▁Washington", ",", "▁D", ".", "C", ".", ",", "▁is", "▁one", "▁big", "▁city", "."], [11]),
    (["▁in", "▁D", ".", "C", ".", "▁It", "▁is", "▁one", "▁city", "."], [4, 9]),
    # ... not after St, Dr, Mr, Mrs; but after "Ms" (not in the list)
    (["▁St", ".", "▁Louis", "▁Dr", ".", "▁Lee", "▁Mr", ".", "▁Kim", "▁Mrs", ".", "▁Park", "▁is", "▁here", "▁now", "."],
     [15]),
    (["▁M", "s", ".", "▁Lee", "▁came", "▁here", "."], [2, 6]),
    # ... not when a "." is one, two or three tokens ahead; four tokens ahead is an end
    (["▁It", ".", ".", "▁The", "▁big", "▁red", "▁ball", "."], [2, 7]),
    (["▁U", ".", "S", ".", "▁law", "▁is", "▁old", "."], [3, 7]),
    (["▁U", ".", "S", ".", "▁law", "."], [5]),
    (["▁It", ".", "▁is", "▁old", "."], [4]),
    (["▁It", ".", "▁is", "▁very", "▁old", "."], [1, 5]),
    # ... not when the next piece is a number ("$2.50"); a "▁"-prefixed number is a word
    (["▁It", "▁costs", "▁$2", ".", "50", "▁today", "."], [6]),
    (["▁It", "▁is", "▁2", ".", "▁50", "▁is", "▁more", "."], [3, 7]),
    # decimals the tokenizer keeps in one piece are no terminal
    (["▁It", "▁is", "▁", "1.9", "▁", "m", "▁wide", "."], [7]),
])
def test_each_rule_on_flan_t5_pieces(t5, pieces, seq, expected):
    assert ends(t5, pieces, seq) == expected


def sample(t5, text, ended=True):
    return t5(text, add_special_tokens=False)["input_ids"] + ([t5.eos_token_id] if ended else [])


def layout(t5, ids):
    text = t5.decode(ids, skip_special_tokens=True)
    row = {"rationale": text[solution_start(text):].strip(), "response_ids": ids}
    return row, sentence_layout(t5, row, "paper")


def test_the_sentences_the_teacher_sees_are_the_ones_whose_ends_ppo_rewards(t5):
    ids = sample(t5, "Solution: Dr. Lee met Ms. Kim at the big farm in the U.S. last year. The farm grows corn "
                     "and wheat. So the answer is (B).")
    row, lay = layout(t5, ids)
    # "Ms." (8) ends a sentence: no "." in the next three pieces; "U.S." (19) does not: "year." is 3 ahead
    assert lay["sentences"] == ["Dr. Lee met Ms.", "Kim at the big farm in the U.S. last year.",
                                "The farm grows corn and wheat.", "So the answer is (B)."]
    assert lay["sentence_end_tokens"] == [8, 22, 29, 36] and len(ids) == 38  # ")." ends the last: </s> (37) is no end
    for (a, b), s in zip(lay["sentence_spans"], lay["sentences"]):
        assert row["rationale"][a:b] == s
    # sentence j decodes from the ids after end j-1 up to end j
    cuts = [-1, *lay["sentence_end_tokens"]]
    assert [t5.decode(ids[a + 1:b + 1], skip_special_tokens=True).strip() for a, b in zip(cuts, cuts[1:])][1:] == \
        lay["sentences"][1:]


def test_an_unfinished_last_sentence_is_rewarded_at_eos_and_a_cut_tail_is_no_sentence(t5):
    ids = sample(t5, "Solution: It is red. The answer is")
    _, lay = layout(t5, ids)
    assert lay["sentences"] == ["It is red.", "The answer is"] and lay["sentence_end_tokens"] == [5, 9]
    assert ids[9] == t5.eos_token_id  # the aresnb rules end it at "▁is" (8), one token earlier
    cut = sample(t5, "Solution: It is red. The answer is", ended=False)  # max_new_tokens reached
    _, lay = layout(t5, cut)
    assert lay["sentences"] == ["It is red."] and lay["sentence_end_tokens"] == [5]
    _, lay = layout(t5, sample(t5, "Solution:"))
    assert lay == {"sentences": [], "sentence_spans": [], "sentence_end_tokens": []}
    _, lay = layout(t5, [t5.eos_token_id])  # an empty rationale: </s> ends a sentence with no text
    assert lay["sentences"] == []


def test_multi_piece_words_and_ids_the_tokenizer_would_not_choose(t5):
    natural = sample(t5, "Solution: An electromagnet is strong. It can lift heavy iron nails.")  # "▁electro" "mag" "net"
    _, lay = layout(t5, natural)
    assert lay["sentences"] == ["An electromagnet is strong.", "It can lift heavy iron nails."]
    assert lay["sentence_end_tokens"] == [8, 15]
    spelled = t5.convert_tokens_to_ids([S, ":", "▁The", "▁mag", "net", "▁is", "▁", "r", "e", "d", ".", "▁Yes", "</s>"])
    assert t5.decode(spelled, skip_special_tokens=True) == "Solution: The magnet is red. Yes"
    _, lay = layout(t5, spelled)
    assert lay["sentences"] == ["The magnet is red.", "Yes"] and lay["sentence_end_tokens"] == [10, 12]


def test_a_tokenizer_that_is_not_t5s_fails_clearly():
    bpe = train_bpe_tokenizer(["Solution: The square is blue. So the answer is (A)."] * 20, vocab_size=300)
    with pytest.raises(ValueError, match="not T5's: missing .*▁Solution"):
        T5Pieces.of(bpe)
    with pytest.raises(ConfigError, match="teacher.sentence_rules=paper needs a T5 tokenizer"):
        load_config(None, ["teacher.sentence_rules=paper"])  # smoke trains its own BPE tokenizer


def test_stage_03_refuses_paper_rules_on_a_tokenizer_that_is_not_t5s(tmp_path):
    bpe = train_bpe_tokenizer(["Solution: The square is blue."] * 20, vocab_size=300)
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "teacher.sentence_rules=paper",
                             f"model.tokenizer={tmp_path / 'bpe'}"])  # a path: only the stage can look inside
    paths = RunPaths(cfg)
    bpe.save_pretrained(paths.policy_entering_round(1))
    with pytest.raises(ValueError, match="paper's sentence rules .* not T5's"):
        teacher_scores.run(cfg, paths, 1)
