"""Stage 06 pieces: accuracy by category, its table, LoRA targets and adapter round trip, extraction."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from aresnb.config import load_config
from aresnb.data.schema import COLUMNS
from aresnb.evaluation.accuracy import accuracy_by_category, heads_table
from aresnb.evaluation.tables import write_table
from aresnb.io import read_jsonl
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration
from aresnb.model.tokenizer import train_bpe_tokenizer
from aresnb.paths import RunPaths
from aresnb.sft import answer
from aresnb.sft.answer import attach_lora, load_answer_model, lora_target_modules, predict_answers, trainable_fraction
from aresnb.sft.examples import make_examples
from aresnb.stages.answer_lora import NO_IMAGE, Head, evaluate_head, train_head
from aresnb.stages.driver import stage_run

P, D = 4, 8
COLOURS = ("red", "blue", "green")


def row(correct: bool, *cats: str) -> dict:
    return {"correct": correct, "categories": list(cats)}


def test_accuracy_by_category_hand_made_case():
    rows = [
        row(True, "NAT", "IMG", "G1-6"),
        row(False, "NAT", "TXT", "G7-12"),
        row(True, "SOC", "NO", "G7-12"),
        row(True, "NAT", "IMG", "G1-6"),
    ]
    acc = accuracy_by_category(rows)
    assert list(acc) == ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"]
    assert acc["NAT"] == pytest.approx(200 / 3) and acc["SOC"] == 100.0 and acc["LAN"] is None
    assert acc["TXT"] == 0.0 and acc["IMG"] == 100.0 and acc["NO"] == 100.0
    assert acc["G1-6"] == 100.0 and acc["G7-12"] == 50.0 and acc["Avg"] == 75.0
    assert accuracy_by_category([])["Avg"] is None


def test_accuracy_table_csv_and_markdown(tmp_path):
    acc = {"baseline": {"QCM-A": accuracy_by_category([row(True, "NAT"), row(False, "SOC")])},
           "ares": {"QCM-A": accuracy_by_category([row(True, "NAT"), row(True, "SOC")])}}
    table = heads_table(acc)
    assert list(table["model"]) == ["baseline", "ares"]
    assert "LAN" not in table.columns  # a column no model has is dropped (e.g. A-OKVQA keeps only Avg)
    files = write_table(table, tmp_path, "accuracy_by_category", "caption", 2, formats=("csv", "md"))
    assert set(files) == {"csv", "md"}
    assert open(files["csv"]).read().splitlines()[1] == "baseline,QCM-A,100.0,0.0,50.0"
    lines = open(files["md"]).read().splitlines()
    assert lines[2] == "| model | format | NAT | SOC | Avg |" and lines[5] == "| ares | QCM-A | 100.00 | 100.00 | 100.00 |"


def tiny_model(vocab_size: int, seed: int = 0) -> MultimodalT5ForConditionalGeneration:
    torch.manual_seed(seed)
    return MultimodalT5ForConditionalGeneration(MultimodalT5Config(
        vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, image_feature_dim=D, image_num_tokens=P))


def test_all_linear_targets_every_linear_but_the_head_and_mha_internals():
    names = lora_target_modules(tiny_model(50), "all-linear")
    assert names == ["gate", "image_proj", "k", "o", "q", "v", "wi_0", "wi_1", "wo"]
    assert lora_target_modules(tiny_model(50), ["q", "v"]) == ["q", "v"]


def test_lora_adapter_round_trip_gives_identical_outputs(tmp_path):
    tok = train_bpe_tokenizer(["The answer is (A). Question: which? Options: (A) x (B) y Answer:"] * 5, 120)
    base = tiny_model(len(tok))
    base.save_pretrained(tmp_path / "base")
    cfg = load_config(None, ["answer.r=4", "answer.alpha=8"])
    peft_model = attach_lora(base, cfg.answer)
    frac = trainable_fraction(peft_model)
    assert 0 < frac["fraction"] < 0.5 and frac["trainable"] == sum(
        p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    with torch.no_grad():  # LoRA B starts at zero; make the adapter do something
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    peft_model.eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    loaded = load_answer_model(tmp_path / "base", tmp_path / "adapter")
    enc = tok(["Question: which? Answer:", "Options: (A) x"], return_tensors="pt", padding=True)
    feats = torch.randn(2, P, D)
    kw = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], image_features=feats)
    dec = torch.zeros(2, 3, dtype=torch.long)
    a = peft_model(**kw, decoder_input_ids=dec).logits
    b = loaded(**kw, decoder_input_ids=dec).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    plain = load_answer_model.__globals__["load_rationale_model"](tmp_path / "base")
    assert not torch.allclose(a, plain(**kw, decoder_input_ids=dec).logits)  # the adapter matters
    assert torch.equal(peft_model.generate(**kw, max_new_tokens=5), loaded.generate(**kw, max_new_tokens=5))


def test_predict_answers_extraction_fallback_is_seeded_and_counted(monkeypatch):
    problems = [{"qid": f"q{i}", "question": "Which?", "choices": ["x", "y", "z"], "answer": i % 3, "hint": "",
                 "caption": "", "subject": "natural science", "grade": "grade3", "has_image": False, "image": ""}
                for i in range(4)]
    outputs = ["The answer is (A).", "The answer is (B).", "no idea", "The answer is (Q)."]
    monkeypatch.setattr(answer, "generate_texts", lambda *a, **k: [[t] for t in outputs])
    rows = predict_answers(None, None, problems, None, "QCM-A", seed=3)
    assert [r["extracted"] for r in rows] == [True, True, False, False]
    assert [r["correct"] for r in rows[:2]] == [True, True]
    rng = random.Random(3)
    assert [r["prediction"] for r in rows[2:]] == [rng.randrange(3), rng.randrange(3)]
    assert rows[0]["categories"] == ["NAT", "NO", "G1-6"]
    assert predict_answers(None, None, problems, None, "QCM-A", seed=3) == rows


def _colour_problem(i: int, split: str) -> dict:
    row = {c: "" for c in COLUMNS}
    row.update({"qid": f"{split}{i}", "question": "What colour is the shape?", "choices": list(COLOURS),
                "answer": i % 3, "has_image": True, "features_zeroed": False, "subject": "natural science",
                "grade": "grade3", "solution": f"The shape is {COLOURS[i % 3]}.", "split": split})
    return row


def _colour_features(n: int, seed: int) -> np.ndarray:
    """Feature channel c lights up for colour c: the answer is in the image and nowhere else."""
    feats = np.random.default_rng(seed).normal(0, 0.1, size=(n, P, D)).astype(np.float32)
    for i in range(n):
        feats[i, :, i % 3] += 2.0
    return feats


def test_the_answer_head_reads_the_image_and_the_ablation_cannot(tmp_path):
    """Stage 06's head and its image ablation on a task whose answer only the image holds (every
    question, option list and context is the same). With the image the head answers (seeds 0-5
    all reach 100%; asserted: at least 90%, chance is 33%); with the image path off every test
    problem is the same input, so the head writes the same answer for all of them: at most 33%."""
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "answer.r=8", "answer.alpha=16", "answer.train.epochs=20",
                             "answer.train.lr=1e-2", "answer.train.batch_size=8", "answer.max_new_tokens=16"])
    paths = RunPaths(cfg)
    train, test = [_colour_problem(i, "train") for i in range(24)], [_colour_problem(i, "test") for i in range(12)]
    tok = train_bpe_tokenizer([e["source"] + " " + e["target"] for e in make_examples(train, "QCM-A")], 300)
    tiny_model(len(tok)).save_pretrained(paths.baseline_model_dir)
    tok.save_pretrained(paths.baseline_model_dir)
    data = {"train": train, "test": test, "features": {"train": _colour_features(24, 1), "test": _colour_features(12, 2)}}
    tokenized: dict = {}  # the ablation reads the same tokens, without the features

    def head_summary(head: Head) -> dict:
        trained, _ = train_head(stage_run(cfg, paths, "06_answer_lora"), head, train, data["features"]["train"],
                                tokenized)
        return evaluate_head(cfg, paths, head, data, trained)

    with_image = head_summary(Head("baseline", paths.baseline_model_dir, "QCM-A", True, "baseline"))
    without = head_summary(Head(NO_IMAGE, paths.baseline_model_dir, "QCM-A", False, "baseline"))
    assert with_image["extraction_failures"] == 0 and with_image["accuracy"]["Avg"] >= 90.0
    outputs = {r["output"] for r in read_jsonl(paths.answer_dir(NO_IMAGE, "QCM-A") / "predictions_test.jsonl")}
    assert len(outputs) == 1 and without["extraction_failures"] == 0  # one answer for every problem
    assert without["accuracy"]["Avg"] <= 100 / 3 + 1e-9 and without["use_image"] is False
