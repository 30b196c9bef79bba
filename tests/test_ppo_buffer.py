"""What stage 03 keeps of a sample and how stage 04 reads it back: the sampled ids, EOS or cut,
the token that ends each sentence, the sampling policy's log-probs; batch-seeded resumable sampling."""

import datasets
import pytest
import torch

from aresnb.data.prompts import solution_start
from aresnb.model.generation import sample_responses, split_response
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration
from aresnb.model.tokenizer import train_bpe_tokenizer
from aresnb.rl.ppo_math import sentence_rewards
from aresnb.rl.rollouts import build_ppo_samples, sentence_layout
from aresnb.stages.ppo import eval_subset, paired_delta
from aresnb.text.sentences import sentence_end_tokens, split_sentences

PROBLEM = {"qid": "p1", "question": "Which colour is the square?", "choices": ["red", "blue"], "answer": 1,
           "hint": "", "caption": "A blue square.", "image": "", "has_image": False}


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Solution: The square is blue. Blue is a colour. So the answer is blue."] * 20 + \
            ["Question: Which colour is the square? Context: A blue square. Options: (A) red (B) blue Solution:"] * 20
    return train_bpe_tokenizer(texts, vocab_size=300)


def layout(tokenizer, text, ended):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if ended else [])
    rationale = text[solution_start(text):].strip()
    return ids, {"rationale": rationale, "response_ids": ids, **sentence_layout(tokenizer, {"rationale": rationale,
                                                                                            "response_ids": ids})}


def test_sentence_ends_point_into_the_sampled_ids(tokenizer):
    ids, row = layout(tokenizer, "Solution: The square is blue. Blue is a colour.", ended=True)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert row["sentences"] == ["The square is blue.", "Blue is a colour."]
    assert [tokens[i].endswith(".") for i in row["sentence_end_tokens"]] == [True, True]
    assert row["sentence_end_tokens"][-1] == len(ids) - 2  # the period, not the EOS after it
    assert tokenizer.decode(ids[: row["sentence_end_tokens"][0] + 1]) == "Solution: The square is blue."


def test_a_cut_sample_has_no_eos_and_its_last_sentence_is_rewarded_at_its_last_token(tokenizer):
    ids, row = layout(tokenizer, "Solution: The square is blue. Blue is a col", ended=False)
    assert tokenizer.eos_token_id not in ids
    assert row["sentences"][-1] == "Blue is a col"  # the unfinished sentence is kept
    assert row["sentence_end_tokens"][-1] == len(ids) - 1
    rewards = sentence_rewards([[1.0, 0.0]], [row["sentence_end_tokens"]], (1, len(ids)))
    assert rewards[0, -1].item() == -0.5 and rewards[0].abs().sum().item() == 1.0


def test_ids_the_tokenizer_would_not_choose_still_map_to_their_sentences(tokenizer):
    """A sampler may spell "blue." in pieces; the ends follow the ids, not a re-encoding of the text."""
    text = "Solution: It is blue. Yes."
    pieces = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.convert_ids_to_tokens(
        tokenizer(text, add_special_tokens=False)["input_ids"])]
    spelled = []
    for t in pieces:  # split every token into its single characters' tokens where the vocabulary has them
        chars = [tokenizer.convert_tokens_to_ids(c) for c in tokenizer.convert_ids_to_tokens([t])[0]]
        spelled += chars if tokenizer.unk_token_id not in chars else [t]
    assert tokenizer.decode(spelled) == text and len(spelled) > len(pieces)
    spans = split_sentences(text[solution_start(text):])
    ends = sentence_end_tokens(tokenizer, spelled, spans, solution_start(text))
    assert [tokenizer.decode(spelled[: e + 1]) for e in ends] == ["Solution: It is blue.", text]


def test_split_response_stops_at_eos_not_at_padding():
    assert split_response([0, 5, 0, 7, 1, 0, 0], eos_token_id=1) == ([5, 0, 7, 1], True)  # a sampled pad token
    assert split_response([0, 5, 6, 7], eos_token_id=1) == ([5, 6, 7], False)


def row(rationale, scores, tokenizer, dropped=False, reason=None, ended=True):
    _, r = layout(tokenizer, "Solution: " + rationale, ended)
    return {"qid": "p1", "sample_index": 0, **r, "scores": scores, "dropped": dropped, "drop_reason": reason,
            "ended": ended}


def test_stage_04_reads_the_ids_as_sampled(tokenizer):
    problems = datasets.Dataset.from_list([PROBLEM])
    r = row("The square is blue. Blue is a colour.", [1.0, 0.5], tokenizer)
    samples, stats = build_ppo_samples([r], problems, tokenizer, 64)
    s = samples[0]
    assert s.response_ids == r["response_ids"] and s.sentence_end_indices == r["sentence_end_tokens"]
    assert s.scores == [1.0, 0.5] and not s.dropped and s.ended and s.feature_row == 0
    assert tokenizer.decode(s.source_ids, skip_special_tokens=True).startswith("Question: Which colour")
    assert stats == {"samples_total": 1, "samples_dropped": 0, "drop_reasons": {}, "cut_samples": 0}


def test_dropped_and_mismatched_rows_are_flagged_and_counted(tokenizer):
    problems = datasets.Dataset.from_list([PROBLEM])
    rows = [row("The square is blue.", None, tokenizer, True, "invalid_reply"),
            row("The square is blue. It is.", [0.9], tokenizer),  # 2 sentences, 1 score
            row("The square is blue", [0.9], tokenizer, ended=False)]
    samples, stats = build_ppo_samples(rows, problems, tokenizer, 64)
    assert [s.dropped for s in samples] == [True, True, False]
    assert stats["drop_reasons"] == {"invalid_reply": 1, "span_mismatch": 1} and stats["cut_samples"] == 1
    with pytest.raises(KeyError, match="nope"):
        build_ppo_samples([{**rows[0], "qid": "nope"}], problems, tokenizer, 64)


def tiny_model(tokenizer):
    torch.manual_seed(0)
    return MultimodalT5ForConditionalGeneration(MultimodalT5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, image_feature_dim=4, image_num_tokens=2)).eval()


def test_sampling_keeps_ids_eos_and_logprobs_and_resumes_batch_by_batch(tokenizer):
    model = tiny_model(tokenizer)
    problems = [dict(PROBLEM, qid=f"p{i}", question=f"Which colour is square {i}?" + " really" * i) for i in range(5)]
    kw = dict(num_samples=2, max_new_tokens=6, batch_size=2, max_source_length=64, seed=3)
    batches = list(sample_responses(model, tokenizer, problems, None, **kw))
    rows = [r for _, b in batches for r in b]
    assert len(batches) == 3 and sorted((r["qid"], r["sample_index"]) for r in rows) == \
        sorted((p["qid"], k) for p in problems for k in range(2))
    for r in rows:
        assert 1 <= len(r["response_ids"]) <= 6 and len(r["sample_logprobs"]) == len(r["response_ids"])
        assert r["ended"] == (r["response_ids"][-1] == tokenizer.eos_token_id)
        assert tokenizer.eos_token_id not in r["response_ids"][:-1]
        assert all(lp <= 0 for lp in r["sample_logprobs"])
    assert any(not r["ended"] for r in rows)  # an untrained model runs into max_new_tokens
    # resuming after the first batch (or sampling any subset: a process's share) draws exactly what one full run draws
    resumed = list(sample_responses(model, tokenizer, problems, None, batches=[1, 2], **kw))
    assert resumed == batches[1:]
    assert list(sample_responses(model, tokenizer, problems, None, batches=[2], **kw)) == batches[2:]  # any subset


def test_paired_delta_and_eval_subset():
    before = {"rows": [{"qid": q, "score": s} for q, s in (("a", 0.2), ("b", 0.5), ("c", None))]}
    after = {"rows": [{"qid": q, "score": s} for q, s in (("a", 0.6), ("b", 0.5), ("c", 0.9))]}
    d = paired_delta(before, after, 200, 0)
    assert d["n"] == 2 and d["delta"] == pytest.approx(0.2) and d["ci95"][0] <= 0.2 <= d["ci95"][1]
    assert eval_subset(10, None, 0) == list(range(10))
    a = eval_subset(48, 16, 0)
    assert a == eval_subset(48, 16, 0) and a == sorted(a) and len(set(a)) == 16
