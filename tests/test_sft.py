"""The supervised trainer (accelerate, checkpoints, resume, metrics) and batched generation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from aresnb.config import TrainConfig
from aresnb.model.generation import generate_rationales, generate_texts
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration, load_rationale_model
from aresnb.model.tokenizer import train_bpe_tokenizer
from aresnb.sft.examples import IGNORE_INDEX, Collator, TokenizedExamples, make_examples
from aresnb.sft.trainer import evaluate_seq2seq, train_seq2seq

P, D, N = 4, 8, 24
COLOURS = ["red", "blue", "green"]


def problem(i: int) -> dict:
    return {"qid": f"q{i}", "question": "What colour is the shape?", "choices": list(COLOURS), "answer": i % 3,
            "hint": "", "caption": "", "lecture": "", "solution": f"The shape is {COLOURS[i % 3]}. So the answer is {COLOURS[i % 3]}."}


@pytest.fixture(scope="module")
def task():
    """Image-dependent toy task: feature channel c lights up for colour c."""
    problems = [problem(i) for i in range(N)]
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 0.1, size=(N, P, D)).astype(np.float32)
    for i in range(N):
        feats[i, :, i % 3] += 2.0
    examples = make_examples(problems, "QCM-A")
    tok = train_bpe_tokenizer([e["source"] + " " + e["target"] for e in make_examples(problems, "QCM-E")] + [e["target"] for e in examples], 200)
    return problems, feats, examples, tok


def tiny_model(tok, dropout: float = 0.1, seed: int = 0) -> MultimodalT5ForConditionalGeneration:
    torch.manual_seed(seed)
    return MultimodalT5ForConditionalGeneration(MultimodalT5Config(
        vocab_size=len(tok), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1,
        dropout_rate=dropout, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, image_feature_dim=D, image_num_tokens=P))


def test_make_examples_formats(task):
    problems, _, examples, _ = task
    assert examples[1]["source"].endswith("Answer:") and examples[1]["target"] == "The answer is (B)."
    assert examples[1]["feature_index"] == 1
    g = make_examples(problems[:2], "QCMG-A", rationales={"q0": "Solution: It is red.", "q1": "It is blue."})
    assert "Solution: It is blue.\nAnswer:" in g[1]["source"]
    e = make_examples(problems[:1], "QCM-E", rationales={"q0": "Corrected rationale."}, zero_features=True)
    assert e[0]["target"] == "Solution: Corrected rationale." and e[0]["feature_index"] is None
    with pytest.raises(KeyError, match="q1"):
        make_examples(problems[:2], "QCMG-A", rationales={"q0": "x"})


def test_collator_pads_masks_labels_and_shifts_them_into_decoder_inputs(task):
    _, feats, examples, tok = task
    targets = [dict(e, target=t) for e, t in zip(examples[:3], ["a", "The answer is (B).", "b c"])]
    data = TokenizedExamples(tok, targets, 64, 16)
    b = Collator(tok.pad_token_id, feats, decoder_start_id=0)([data[i] for i in range(3)])
    assert set(b) == {"input_ids", "attention_mask", "labels", "decoder_input_ids", "image_features"}
    assert b["image_features"].shape == (3, P, D) and b["image_features"].dtype == torch.float32
    short = b["labels"][0]
    assert (short == IGNORE_INDEX).any() and short[0] != IGNORE_INDEX
    assert b["input_ids"].shape == b["attention_mask"].shape
    assert (b["decoder_input_ids"][:, 0] == 0).all()
    assert torch.equal(b["decoder_input_ids"][1, 1:], b["labels"][1, :-1])  # the longest target: no padding
    assert (b["decoder_input_ids"] >= 0).all()  # label padding never reaches the decoder
    no_image = data.without_features()
    assert no_image[1][:2] == data[1][:2] and no_image[1][2] is None and no_image.digest != data.digest


def test_train_learns_writes_metrics_checkpoints_and_model(task, tmp_path):
    _, feats, examples, tok = task
    cfg = TrainConfig(epochs=12, lr=5e-3, batch_size=8, save_every_steps=10, log_every_steps=3)
    model = tiny_model(tok)
    before = evaluate_seq2seq(model, tok, examples, feats)
    res = train_seq2seq(model, tok, examples, feats, cfg, tmp_path, progress=False)
    after = evaluate_seq2seq(res.model, tok, examples, feats)
    assert res.steps == res.total_steps == 36
    assert after["loss"] < 0.5 * before["loss"] and res.last_loss < res.first_loss
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36]
    assert {"step", "loss", "lr", "samples_per_s", "epoch"} <= set(rows[0]) and rows[-1]["lr"] < rows[0]["lr"]
    assert [d.name for d in (tmp_path / "checkpoints").iterdir()] == ["step_000036"]  # keeps the last one
    loaded = load_rationale_model(tmp_path / "model")
    assert (tmp_path / "model" / "tokenizer.json").exists()
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_resume_from_checkpoint_matches_an_uninterrupted_run(task, tmp_path):
    _, feats, examples, tok = task
    cfg = TrainConfig(epochs=3, lr=3e-3, batch_size=5, grad_accum=2, warmup_ratio=0.2, save_every_steps=2, log_every_steps=1)
    full = train_seq2seq(tiny_model(tok), tok, examples, feats, cfg, tmp_path / "a", progress=False)
    cut = train_seq2seq(tiny_model(tok), tok, examples, feats, cfg, tmp_path / "b", progress=False, stop_after_steps=4)
    assert cut.steps == 4 and not (tmp_path / "b" / "model").exists()
    resumed = train_seq2seq(tiny_model(tok, seed=123), tok, examples, feats, cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from_step == 4 and resumed.steps == full.steps == 9  # 5 batches/epoch, accum 2 -> 3/epoch
    for k, v in full.model.state_dict().items():  # same data order, dropout masks, optimizer and schedule
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))  # no duplicated rows after the resume


def test_gradient_accumulation_matches_the_large_batch(task, tmp_path):
    """Batches of 4 accumulated twice make the optimizer steps batches of 8 make (equal-length
    targets: a micro-batch's mean loss weighs its tokens as the large batch does)."""
    _, feats, examples, tok = task
    assert len({len(tok(e["target"])["input_ids"]) for e in examples}) == 1
    large = TrainConfig(epochs=2, lr=1e-2, batch_size=8, grad_accum=1, log_every_steps=1)
    runs = {name: train_seq2seq(tiny_model(tok, dropout=0.0), tok, examples, feats, c, tmp_path / name, progress=False)
            for name, c in (("large", large), ("accumulated", dataclasses.replace(large, batch_size=4, grad_accum=2)),
                            ("small", dataclasses.replace(large, batch_size=4)))}
    assert runs["large"].steps == runs["accumulated"].steps == 6 and runs["small"].steps == 12  # 24 examples, 2 epochs
    assert [r["step"] for r in runs["accumulated"].metrics] == list(range(1, 7))
    # Compared by what the weights compute: AdamW moves a weight whose gradient is exactly zero (the
    # key bias of attention: softmax ignores it) by float noise / noise, about lr, on either side.
    data = TokenizedExamples(tok, examples, 64, 16)
    batch = Collator(tok.pad_token_id, feats)([data[i] for i in range(len(data))])
    with torch.no_grad():
        logits = {name: r.model(**batch).logits for name, r in runs.items()}
        untrained = tiny_model(tok, dropout=0.0).eval()(**batch).logits
    torch.testing.assert_close(logits["accumulated"], logits["large"], rtol=0, atol=1e-4)
    assert (logits["small"] - logits["large"]).abs().max() > 0.1  # twice the steps of half the batch: not the same
    assert (untrained - logits["large"]).abs().max() > 0.1  # and training moved the model


def test_checkpoints_of_another_recipe_or_other_examples_are_discarded_not_resumed(task, tmp_path, capsys):
    _, feats, examples, tok = task

    def checkpoints():
        return sorted(d.name for d in (tmp_path / "checkpoints").iterdir())

    cfg = TrainConfig(epochs=1, lr=1e-3, batch_size=8, save_every_steps=1)
    train_seq2seq(tiny_model(tok), tok, examples, feats, cfg, tmp_path, progress=False, stop_after_steps=2)
    assert checkpoints() == ["step_000002"]
    other = dataclasses.replace(cfg, lr=2e-3)  # another recipe
    res = train_seq2seq(tiny_model(tok), tok, examples, feats, other, tmp_path, progress=False, stop_after_steps=1)
    assert res.resumed_from_step is None and res.steps == 1
    assert "discarding 1 checkpoint(s)" in capsys.readouterr().out and checkpoints() == ["step_000001"]
    corrected = [dict(e, target="The answer is (A).") for e in examples]  # the same recipe, new targets
    res = train_seq2seq(tiny_model(tok), tok, corrected, feats, other, tmp_path, progress=False, stop_after_steps=2)
    assert res.resumed_from_step is None and checkpoints() == ["step_000002"]
    res = train_seq2seq(tiny_model(tok), tok, corrected, feats, other, tmp_path, progress=False)
    assert res.resumed_from_step == 2 and res.steps == 3  # its own checkpoint: resumed


def test_generate_rationales_order_samples_seed_and_prefix(task):
    problems, feats, _, tok = task
    model = tiny_model(tok, dropout=0.0).eval()
    greedy = generate_rationales(model, tok, problems[:5], feats[:5], max_new_tokens=6, batch_size=2)
    assert [r["qid"] for r in greedy] == [p["qid"] for p in problems[:5]]
    assert all(r["sample_index"] == 0 and not r["rationale"].startswith("Solution:") for r in greedy)
    kw = dict(num_samples=3, do_sample=True, top_k=20, temperature=1.0, max_new_tokens=6, batch_size=4, seed=7)
    a = generate_rationales(model, tok, problems[:4], feats[:4], **kw)
    b = generate_rationales(model, tok, problems[:4], feats[:4], **kw)
    assert [(r["qid"], r["sample_index"]) for r in a] == [(f"q{i}", k) for i in range(4) for k in range(3)]
    assert a == b  # seeded
    assert len({r["rationale"] for r in a}) > 1


def test_generate_texts_restores_input_order_after_length_sorting(task):
    _, feats, _, tok = task
    model = tiny_model(tok, dropout=0.0).eval()
    sources = ["short", "a much longer source text than the others here", "mid length text"]
    batched = generate_texts(model, tok, sources, feats, max_new_tokens=5, batch_size=2)
    single = [generate_texts(model, tok, [s], feats, feature_indices=[i], max_new_tokens=5)[0] for i, s in enumerate(sources)]
    assert batched == single
    with pytest.raises(IndexError, match="out of range"):
        generate_texts(model, tok, sources, feats[:1], max_new_tokens=2)


def test_metrics_rows_reach_the_trackers_of_run_log_with(task, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aresnb.model.tracking import Tracking

    _, feats, examples, tok = task
    cfg = TrainConfig(epochs=2, lr=3e-3, batch_size=4, log_every_steps=1, save_every_steps=100)
    tracking = Tracking(("tensorboard",), str(tmp_path / "tracking"), "sft", {"train": {"lr": 3e-3, "max_grad_norm": None}})
    res = train_seq2seq(tiny_model(tok), tok, examples, feats, cfg, tmp_path / "out", progress=False, tracking=tracking)
    events = EventAccumulator(str(tmp_path / "tracking" / "sft")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [m["step"] for m in res.metrics]
    assert [round(e.value, 5) for e in events.Scalars("loss")] == [round(m["loss"], 5) for m in res.metrics]


def test_a_tracker_that_is_not_installed_refuses_the_run_before_work():
    from aresnb.pipeline import preflight
    from aresnb.config import load_config

    cfg = load_config(None, ["run.log_with=[tensorboard, trackio]"])
    assert preflight.tracker_problems(cfg, ["01_data"]) == []  # nothing trains
    problems = preflight.tracker_problems(cfg, ["02_baseline"])
    assert problems == ["run.log_with names trackio, which is not installed here (pip install trackio, or remove it)"]
