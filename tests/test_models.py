"""The multimodal rationale model and its tokenizer: fusion, masks, zero features, save/load."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5Config, T5ForConditionalGeneration

from aresnb.config import load_config
from aresnb.model.multimodal_t5 import (
    MultimodalT5Config,
    MultimodalT5ForConditionalGeneration,
    load_rationale_model,
)
from aresnb.model.start import build_rationale_model
from aresnb.model.tokenizer import build_or_load_tokenizer, train_bpe_tokenizer

from conftest import shared_path

P, D = 5, 12  # image tokens, feature dim
TEXTS = [
    "Question: What colour is the shape?\nContext: N/A\nOptions: (A) red (B) blue\nSolution:",
    "Solution: The shape in the image is red. So the answer is red.",
    "The answer is (A). Dr. Smith lives in Washington, D.C. and ran 1.9 km.",
] * 10


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXTS, vocab_size=300)


def tiny_model(vocab_size: int, use_image: bool = True, seed: int = 0) -> MultimodalT5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = MultimodalT5Config(
        vocab_size=vocab_size, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        image_feature_dim=D, image_num_tokens=P, use_image=use_image,
    )
    return MultimodalT5ForConditionalGeneration(config).eval()


def batch(tokenizer, texts=("What colour is it?", "A longer question about the colour of the shape?")):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    torch.manual_seed(1)
    return enc["input_ids"], enc["attention_mask"], torch.randn(len(texts), P, D)


# ---- tokenizer ---------------------------------------------------------------------------------


def test_trained_tokenizer_is_t5_style_with_offsets(tokenizer, tmp_path):
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    text = "So the answer is red."
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc["input_ids"][-1] == tokenizer.eos_token_id  # T5 appends </s>
    pieces = [text[a:b] for a, b in enc["offset_mapping"][:-1]]
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")  # offsets cover the text, no spaces
    assert tokenizer.decode(enc["input_ids"], skip_special_tokens=True) == text
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == enc["input_ids"]


def test_build_or_load_tokenizer_trains_and_reloads(tmp_path):
    cfg = load_config(None, ["model.vocab_size=300"])
    tok = build_or_load_tokenizer(cfg, TEXTS, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    assert tok.is_fast and tok.pad_token_id == 0


def test_build_or_load_tokenizer_loads_flan_t5(tmp_path):
    cfg = load_config(None, [f"model.tokenizer={shared_path('tokenizers', 'flan-t5')}"])
    tok = build_or_load_tokenizer(cfg, None, tmp_path / "tok")
    assert len(tok) == 32100 and tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok("The answer is (B).", return_offsets_mapping=True)["offset_mapping"][0] == (0, 3)


def test_missing_tokenizer_dir_fails_clearly(tmp_path):
    cfg = load_config(None, [f"model.tokenizer={tmp_path / 'nope'}"])
    with pytest.raises(OSError, match="cannot load a tokenizer"):
        build_or_load_tokenizer(cfg, None, tmp_path / "tok")


# ---- fusion ------------------------------------------------------------------------------------


def test_fusion_matches_the_equations_and_shapes(tokenizer):
    model = tiny_model(len(tokenizer))
    ids, mask, feats = batch(tokenizer)
    fused = model.encode(ids, mask, feats).last_hidden_state
    assert fused.shape == (*ids.shape, 32)
    # By hand: H = encoder(text); H_img = W feats; H_att = MHA(H, H_img, H_img); gate; mix.
    f = model.image_fusion
    h = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    h_img = feats @ f.image_proj.weight.T + f.image_proj.bias
    h_att = f.attention(h, h_img, h_img)[0]
    g = torch.sigmoid(torch.cat([h, h_att], -1) @ f.gate.weight.T + f.gate.bias)
    torch.testing.assert_close(fused, (1 - g) * h + g * h_att)
    labels = tokenizer(["So red.", "So blue is it."], return_tensors="pt", padding=True)["input_ids"]
    out = model(input_ids=ids, attention_mask=mask, image_features=feats, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (2, labels.shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    assert out.decoder_hidden_states[-1].shape == (2, labels.shape[1], 32)


def test_text_padding_is_masked_and_image_tokens_are_not(tokenizer):
    model = tiny_model(len(tokenizer))
    ids, mask, feats = batch(tokenizer)
    dec = torch.zeros(2, 3, dtype=torch.long)
    logits = model(input_ids=ids, attention_mask=mask, image_features=feats, decoder_input_ids=dec).logits
    assert (mask[0] == 0).any(), "the fixture needs a padded row"
    junk = ids.clone()
    junk[mask == 0] = 7  # what sits under the mask must not matter
    logits_junk = model(input_ids=junk, attention_mask=mask, image_features=feats, decoder_input_ids=dec).logits
    torch.testing.assert_close(logits[0], logits_junk[0])
    other = model(input_ids=ids, attention_mask=mask, image_features=feats + 1.0, decoder_input_ids=dec).logits
    assert not torch.allclose(logits, other), "every image token is attended to"


def test_zero_features_without_image_or_with_use_image_off(tokenizer):
    model = tiny_model(len(tokenizer))
    ids, mask, feats = batch(tokenizer)
    dec = torch.zeros(2, 2, dtype=torch.long)
    none = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    zeros = model(input_ids=ids, attention_mask=mask, image_features=torch.zeros_like(feats), decoder_input_ids=dec).logits
    torch.testing.assert_close(none, zeros)
    model.config.use_image = False
    off = model(input_ids=ids, attention_mask=mask, image_features=feats, decoder_input_ids=dec).logits
    torch.testing.assert_close(off, zeros)


def test_wrong_feature_shape_is_a_clear_error(tokenizer):
    model = tiny_model(len(tokenizer))
    ids, mask, _ = batch(tokenizer)
    with pytest.raises(ValueError, match=r"image_features must have shape"):
        model.encode(ids, mask, torch.zeros(2, P, D + 1))


def test_generate_uses_the_image(tokenizer):
    model = tiny_model(len(tokenizer))
    ids, mask, feats = batch(tokenizer)
    torch.nn.init.normal_(model.image_fusion.gate.bias, 3.0)  # open the gate: the image dominates
    a = model.generate(input_ids=ids, attention_mask=mask, image_features=feats, max_new_tokens=6, min_new_tokens=6)
    b = model.generate(input_ids=ids, attention_mask=mask, image_features=-feats * 5, max_new_tokens=6, min_new_tokens=6)
    assert a.shape == (2, 7) and not torch.equal(a, b)
    k = model.generate(input_ids=ids, attention_mask=mask, image_features=feats, max_new_tokens=4,
                       do_sample=True, top_k=5, num_return_sequences=3)
    assert k.shape[0] == 6


# ---- save / load -------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_generations(tokenizer, tmp_path):
    model = tiny_model(len(tokenizer))
    ids, mask, feats = batch(tokenizer)
    model.save_pretrained(tmp_path / "m")
    loaded = load_rationale_model(tmp_path / "m")
    auto = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "m")
    assert isinstance(auto, MultimodalT5ForConditionalGeneration)
    assert loaded.config.model_type == "multimodal_t5" and loaded.config.image_feature_dim == D
    for m in (loaded, auto):
        for k, v in model.state_dict().items():
            assert torch.equal(v, m.state_dict()[k]), k
    kw = dict(input_ids=ids, attention_mask=mask, image_features=feats, max_new_tokens=8)
    assert torch.equal(model.generate(**kw), loaded.generate(**kw))


def test_plain_t5_checkpoint_gets_fresh_fusion_layers(tokenizer, tmp_path):
    torch.manual_seed(0)
    plain = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=1, num_decoder_layers=1,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="feature_shape"):
        load_rationale_model(tmp_path / "plain")
    model = load_rationale_model(tmp_path / "plain", feature_shape=(P, D))
    assert isinstance(model, MultimodalT5ForConditionalGeneration)
    assert (model.config.image_num_tokens, model.config.image_feature_dim) == (P, D)
    plain_state = plain.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("image_fusion."):
            assert torch.isfinite(v).all() and v.abs().max() < 10, f"{k} not initialised sensibly"
        else:
            assert torch.equal(v, plain_state[k]), k
    w = model.image_fusion.image_proj.weight
    assert 0.5 * D**-0.5 < w.std().item() < 2 * D**-0.5  # T5-style init, not uninitialised memory
    ids, mask, feats = batch(tokenizer)
    assert model.generate(input_ids=ids, attention_mask=mask, image_features=feats, max_new_tokens=3).shape[0] == 2


def test_build_tiny_model_from_config(tokenizer):
    cfg = load_config(None, ["model.d_model=32", "model.d_ff=64", "model.d_kv=8", "model.num_layers=1", "model.num_decoder_layers=1"])
    model = build_rationale_model(cfg, tokenizer, (P, D))
    assert model.config.vocab_size == len(tokenizer) and model.config.d_model == 32
    assert model.generation_config.decoder_start_token_id == tokenizer.pad_token_id


def test_unknown_local_dir_fails_clearly(tmp_path):
    with pytest.raises(OSError, match="cannot load the rationale model"):
        load_rationale_model(tmp_path / "missing", feature_shape=(P, D))


def test_hub_id_offline_fails_with_a_clear_message():
    import subprocess
    import sys

    code = ("from aresnb.model.multimodal_t5 import load_rationale_model\n"
            "try:\n    load_rationale_model('declare-lab/flan-alpaca-base', feature_shape=(5, 12))\n"
            "except OSError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # what an offline machine sees, without waiting for DNS retries
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "ERR cannot load the rationale model from 'declare-lab/flan-alpaca-base' (Hugging Face hub id)" in out
    assert "set model.base to the local directory" in out
