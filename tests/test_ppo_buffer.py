"""aresnb.stages.ppo: samples.parquet rows -> PPO samples (token alignment of sentence rewards)."""

import datasets
import pytest

from aresnb.stages.ppo import build_ppo_samples, eval_subset
from aresnb.sentences import split_sentences
from aresnb.tokenizer import train_bpe_tokenizer

PROBLEM = {"qid": "p1", "question": "Which colour is the square?", "choices": ["red", "blue"], "answer": 1,
           "hint": "", "caption": "A blue square."}


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Solution: The square is blue. Blue is a colour. So the answer is blue."] * 20 + \
            ["Question: Which colour is the square? Context: A blue square. Options: (A) red (B) blue Solution:"] * 20
    return train_bpe_tokenizer(texts, vocab_size=300)


def row(rationale, scores, dropped=False, reason=None):
    spans = [[s.start, s.end] for s in split_sentences(rationale)]
    return {"qid": "p1", "sample_index": 0, "rationale": rationale, "sentences": [], "sentence_spans": spans,
            "scores": scores, "dropped": dropped, "drop_reason": reason}


def test_sentence_rewards_land_on_the_last_token_of_each_sentence(tokenizer):
    problems = datasets.Dataset.from_list([PROBLEM])
    rationale = "The square is blue. Blue is a colour."
    samples, stats = build_ppo_samples([row(rationale, [1.0, 0.5])], problems, tokenizer, 64, 64)
    s = samples[0]
    tokens = tokenizer.convert_ids_to_tokens(s.response_ids)
    assert tokens[-1] == "</s>"
    assert [tokens[i].endswith(".") for i in s.sentence_end_indices] == [True, True]
    decoded_to_first_end = tokenizer.decode(s.response_ids[: s.sentence_end_indices[0] + 1])
    assert decoded_to_first_end.strip() == "Solution: The square is blue."
    assert s.scores == [1.0, 0.5] and not s.dropped and s.feature_row == 0
    assert tokenizer.decode(s.source_ids, skip_special_tokens=True).startswith("Question: Which colour")
    assert stats["samples_dropped"] == 0


def test_dropped_rows_are_flagged_and_counted(tokenizer):
    problems = datasets.Dataset.from_list([PROBLEM])
    rows = [row("The square is blue.", None, True, "invalid_reply"), row("The square is blue.", [0.9])]
    samples, stats = build_ppo_samples(rows, problems, tokenizer, 64, 64)
    assert [s.dropped for s in samples] == [True, False]
    assert stats["samples_dropped"] == 1 and stats["drop_reasons"] == {"invalid_reply": 1}


def test_unknown_qid_is_named(tokenizer):
    problems = datasets.Dataset.from_list([PROBLEM])
    bad = {**row("The square is blue.", [0.9]), "qid": "nope"}
    with pytest.raises(KeyError, match="nope"):
        build_ppo_samples([bad], problems, tokenizer, 64, 64)


def test_eval_subset_is_seeded_and_sorted():
    assert eval_subset(10, None, 0) == list(range(10))
    a = eval_subset(48, 16, 0)
    assert a == eval_subset(48, 16, 0) and a == sorted(a) and len(set(a)) == 16
