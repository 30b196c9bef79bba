"""Sentence splitting and each sentence's last token (where PPO puts the reward), the aresnb rules;
the paper's rules are test_paper_sentences.py's."""

import pytest

from aresnb.data.prompts import solution_start
from aresnb.text.sentences import is_terminated, sentence_end_tokens, sentence_texts, split_sentences

from conftest import shared_path

CASES = [
    ("Dr. Smith met Mr. Jones on Main St. yesterday. They talked.",
     ["Dr. Smith met Mr. Jones on Main St. yesterday.", "They talked."]),
    ("Washington, D.C. is the capital. It is in the U.S.A. on the east coast.",
     ["Washington, D.C. is the capital.", "It is in the U.S.A. on the east coast."]),
    ("The rock is 1.9 m tall. It weighs 2.50 kg!", ["The rock is 1.9 m tall.", "It weighs 2.50 kg!"]),
    ("Is it hot? Maybe... Let us check.", ["Is it hot?", "Maybe...", "Let us check."]),
    ("The shape is red. The answer is", ["The shape is red.", "The answer is"]),  # cut off by max_new_tokens
    ('He said "stop." Then he left', ['He said "stop."', "Then he left"]),
    ("Use e.g. heat. Wait!? Yes.", ["Use e.g. heat.", "Wait!?", "Yes."]),
    ("It is cold.It rains.", ["It is cold.", "It rains."]),  # a detokenizer dropped the space
    ("The answer is (B).", ["The answer is (B)."]),
    ("  \n ", []),
    ("", []),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_split_sentences(text, expected):
    sents = split_sentences(text)
    assert [s.text for s in sents] == expected
    for s in sents:
        assert text[s.start:s.end] == s.text


def test_is_terminated():
    assert is_terminated("It is red.") and is_terminated('He said "no."') and not is_terminated("The answer is")


@pytest.fixture(scope="module")
def t5():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_path("tokenizers", "flan-t5")))


def aresnb_ends(tokenizer, ids):
    """What stage 03 keeps under the aresnb rules: the text's sentences and each one's end token."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    spans = split_sentences(text[solution_start(text):])
    return [x.text for x in spans], sentence_end_tokens(tokenizer, ids, spans, solution_start(text))


def test_sentence_end_tokens_on_flan_t5_ids(t5):
    # ▁Solution : ▁An ▁electro mag net ▁is ▁strong . ▁Dr . ▁Lee ▁says ▁it ▁is ▁ 1.9 ▁ m ▁wide ! </s>
    #     0     1   2     3     4   5   6     7     8  9  10  11   12   13  14 15 16  17 18  19  20  21
    ids = t5("Solution: An electromagnet is strong. Dr. Lee says it is 1.9 m wide!")["input_ids"]
    assert ids[-1] == t5.eos_token_id and len(ids) == 22
    assert aresnb_ends(t5, ids) == (["An electromagnet is strong.", "Dr. Lee says it is 1.9 m wide!"], [8, 20])


def test_sentence_end_tokens_on_a_cut_flan_t5_sample(t5):
    # ▁Solution : ▁The ▁magnet ▁is ▁red . ▁It ▁attract s ▁ i r   (max_new_tokens reached: no </s>)
    #     0     1   2     3      4    5   6  7     8     9 10 11 12
    ids = t5("Solution: The magnet is red. It attracts ir", add_special_tokens=False)["input_ids"]
    assert t5.eos_token_id not in ids and len(ids) == 13
    assert aresnb_ends(t5, ids) == (["The magnet is red.", "It attracts ir"], [6, 12])  # its last token
    # finished by </s> without a terminal: ended at its last word, the token before </s>
    unfinished = t5("Solution: It is red. The answer is")["input_ids"]
    assert aresnb_ends(t5, unfinished) == (["It is red.", "The answer is"], [5, 8]) and unfinished[9] == t5.eos_token_id


def test_sentence_end_tokens_follow_ids_the_tokenizer_would_not_choose(t5):
    # "magnet" as ▁mag + net and "red" as ▁ + r + e + d: the ends follow the sampled ids
    spelled = t5.convert_tokens_to_ids(["▁Solution", ":", "▁The", "▁mag", "net", "▁is", "▁", "r", "e", "d", ".",
                                        "▁Yes", ".", "</s>"])
    assert t5.decode(spelled, skip_special_tokens=True) == "Solution: The magnet is red. Yes."
    assert aresnb_ends(t5, spelled) == (["The magnet is red.", "Yes."], [10, 12])


def test_sentence_texts():
    assert sentence_texts("It is. Ok.") == ["It is.", "Ok."] and sentence_texts("") == []
