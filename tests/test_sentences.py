"""Sentence splitting and each sentence's last token (where PPO puts the reward)."""

import pytest

from aresnb.sentences import is_terminated, sentence_last_token_indices, sentence_texts, split_sentences

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


def _check_alignment(text: str, tokenizer, prefix: str = "", add_special_tokens: bool = False):
    full = prefix + text
    spans = split_sentences(text)
    idx = sentence_last_token_indices(full, tokenizer, spans, char_offset=len(prefix),
                                      add_special_tokens=add_special_tokens)
    enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    offsets = enc["offset_mapping"]
    assert len(idx) == len(spans) and idx == sorted(idx)
    for span, t in zip(spans, idx):
        end = span.end + len(prefix)
        a, b = offsets[t]
        assert a < end <= b, (span.text, tokenizer.convert_ids_to_tokens(enc["input_ids"][t]), (a, b), end)
        # no later real token starts inside the sentence
        later = [o for o in offsets[t + 1:] if o[1] > o[0]]
        assert all(o[0] >= end for o in later)
    return idx


TEXT = "Dr. Lee says the ball is 1.9 m wide. So the answer is (B)! The U.S.A. is big... It is"


def test_alignment_byte_level_bpe():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT, "The shape is red. The answer is (A).", "It is 2.5 kg. Why? Because."] * 20,
                            vocab_size=300, min_frequency=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    idx = _check_alignment(TEXT, tok)
    assert len(idx) == 4
    _check_alignment(TEXT, tok, prefix="Solution: ")


def test_alignment_t5():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(shared_path("tokenizers", "flan-t5")))
    idx = _check_alignment(TEXT, tok, add_special_tokens=True)  # T5 appends </s>: indices unchanged
    assert idx == _check_alignment(TEXT, tok)
    _check_alignment(TEXT, tok, prefix="Solution: ")
    # the last sentence has no terminal punctuation: its last token is the last real token
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert idx[-1] == len(ids) - 1


def test_alignment_empty_and_given_offsets():
    assert sentence_last_token_indices("", None, spans=[], offsets=[]) == []
    # offsets passed directly (e.g. from a batch encoding); special tokens (0, 0) are skipped
    offsets = [(0, 0), (0, 2), (2, 5), (5, 6), (7, 9), (9, 10), (0, 0)]
    assert sentence_last_token_indices("It is. Ok.", None, offsets=offsets) == [3, 5]
    assert sentence_texts("It is. Ok.") == ["It is.", "Ok."]
