"""MM-CoT's rationale checkpoints in (model.init_from): a checkpoint the test writes with MM-CoT's own
weight names and shapes (random values, tiny dims) loads with every weight accounted for, computes
what MM-CoT's T5ForMultimodalGeneration computes, and equals the same weights loaded natively."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import T5ForConditionalGeneration

from aresnb.config import load_config
from aresnb.io import read_jsonl
from aresnb.model.mmcot import CheckpointError, load_mmcot_rationale_model
from aresnb.model.multimodal_t5 import MultimodalT5Config, MultimodalT5ForConditionalGeneration, load_rationale_model
from aresnb.model.start import build_rationale_model
from aresnb.paths import RunPaths
from aresnb.present.report.sections import baseline_body
from aresnb.stages import baseline, data

P, D, VOCAB = 7, 12, 64  # patches, patch dim (vit would be (145, 1024)), vocabulary
# MM-CoT's names of the fusion weights (its JointEncoder: image_dense, mha_layer, gate_dense), written
# out here rather than taken from aresnb.model.mmcot, so the test does not check the mapping against itself.
MMCOT_FUSION = {
    "image_fusion.image_proj.weight": "encoder.image_dense.weight",
    "image_fusion.image_proj.bias": "encoder.image_dense.bias",
    "image_fusion.attention.in_proj_weight": "encoder.mha_layer.in_proj_weight",
    "image_fusion.attention.in_proj_bias": "encoder.mha_layer.in_proj_bias",
    "image_fusion.attention.out_proj.weight": "encoder.mha_layer.out_proj.weight",
    "image_fusion.attention.out_proj.bias": "encoder.mha_layer.out_proj.bias",
    "image_fusion.gate.weight": "encoder.gate_dense.weight",
    "image_fusion.gate.bias": "encoder.gate_dense.bias",
}
# MM-CoT's config.json is a plain T5 config (Flan-T5 style: untied lm_head, gated-gelu).
T5_CONFIG = {"model_type": "t5", "architectures": ["T5ForMultimodalGeneration"], "vocab_size": VOCAB, "d_model": 16,
             "d_ff": 32, "d_kv": 4, "num_heads": 2, "num_layers": 2, "num_decoder_layers": 2, "dropout_rate": 0.1,
             "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1,
             "decoder_start_token_id": 0, "relative_attention_num_buckets": 8}


def random_model(seed: int = 0) -> MultimodalT5ForConditionalGeneration:
    """aresnb's model with every weight random (fusion biases too) and an lm_head of its own."""
    torch.manual_seed(seed)
    base = {k: v for k, v in T5_CONFIG.items() if k not in ("model_type", "architectures")}
    model = MultimodalT5ForConditionalGeneration(MultimodalT5Config(**base, image_feature_dim=D, image_num_tokens=P))
    model.lm_head.weight = nn.Parameter(torch.empty(VOCAB, 16))  # untied, as in Flan-T5
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def mmcot_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights under MM-CoT's names, as its save_pretrained wrote them with an older transformers:
    the tied embedding copies included, and the legacy key its class ignores on load."""
    state = {MMCOT_FUSION.get(k, k): v.detach().clone() for k, v in model.state_dict().items()}
    state["encoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"] = state["shared.weight"]
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.randn(8, 2)
    return state


def write_mmcot_checkpoint(path: Path, state: dict[str, torch.Tensor], safetensors: bool = False,
                           config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or T5_CONFIG))
    if safetensors:  # safetensors stores no shared storage: one copy each
        save_file({k: v.clone().contiguous() for k, v in state.items() if "embed_tokens" not in k},
                  str(path / "model.safetensors"))
    else:
        torch.save(state, path / "pytorch_model.bin")
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(the original model, its native save_pretrained dir, the same weights as an MM-CoT checkpoint)."""
    root = tmp_path_factory.mktemp("mmcot")
    model = random_model()
    model.save_pretrained(root / "native")
    return model, root / "native", write_mmcot_checkpoint(root / "mm-cot-tiny-rationale", mmcot_state(model))


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids, mask, torch.randn(2, P, D, generator=g), torch.randint(2, VOCAB, (2, 5), generator=g)


def test_mmcot_checkpoint_loads_every_weight_and_equals_the_native_load(checkpoints):
    original, native_dir, mmcot_dir = checkpoints
    loaded = load_mmcot_rationale_model(mmcot_dir, (P, D))  # strict: raises on any missing/unexpected weight
    native = load_rationale_model(native_dir)
    want, got = native.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not torch.equal(loaded.lm_head.weight, loaded.shared.weight)  # Flan-T5's untied head stays untied
    assert loaded.config.image_feature_dim == D and loaded.config.image_num_tokens == P
    ids, mask, feats, labels = inputs()
    with torch.no_grad():
        for image in (feats, None):  # with image features, and the zeros of a problem without an image
            a = loaded(input_ids=ids, attention_mask=mask, image_features=image, decoder_input_ids=labels).logits
            b = native(input_ids=ids, attention_mask=mask, image_features=image, decoder_input_ids=labels).logits
            assert torch.equal(a, b)


def test_the_loaded_model_computes_mmcots_fusion(checkpoints):
    """MM-CoT's forward, rebuilt from the checkpoint's own tensors: stock T5 encoder -> image_dense ->
    one-head MultiheadAttention(text, image, image) -> sigmoid(gate_dense([H; H_att])) -> mix -> decoder."""
    _, _, mmcot_dir = checkpoints
    state = torch.load(mmcot_dir / "pytorch_model.bin", weights_only=True)
    t5 = T5ForConditionalGeneration.from_pretrained(mmcot_dir).eval()  # ignores the fusion weights
    image_dense, gate_dense = nn.Linear(D, 16), nn.Linear(32, 16)
    mha = nn.MultiheadAttention(16, num_heads=1, batch_first=True)
    image_dense.load_state_dict({k: state[f"encoder.image_dense.{k}"] for k in ("weight", "bias")})
    gate_dense.load_state_dict({k: state[f"encoder.gate_dense.{k}"] for k in ("weight", "bias")})
    mha.load_state_dict({k: state[f"encoder.mha_layer.{k}"] for k in mha.state_dict()})
    ids, mask, feats, labels = inputs(2)
    loaded = load_mmcot_rationale_model(mmcot_dir, (P, D))
    with torch.no_grad():
        h = t5.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        image = image_dense(feats)
        att, _ = mha(h, image, image)
        gate = torch.sigmoid(gate_dense(torch.cat([h, att], dim=-1)))
        fused = (1 - gate) * h + gate * att
        want = t5(encoder_outputs=(fused,), attention_mask=mask, decoder_input_ids=labels).logits
        got = loaded(input_ids=ids, attention_mask=mask, image_features=feats, decoder_input_ids=labels).logits
    assert torch.allclose(loaded.encode(ids, mask, feats).last_hidden_state, fused, atol=1e-6)
    assert torch.allclose(got, want, atol=1e-5)


def test_safetensors_sharded_and_legacy_checkpoints_load_the_same(checkpoints, tmp_path):
    original, native_dir, _ = checkpoints
    state = mmcot_state(original)
    single = write_mmcot_checkpoint(tmp_path / "st", state, safetensors=True)
    sharded = tmp_path / "shards"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(T5_CONFIG))
    names = sorted(k for k in state if "embed_tokens" not in k)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in halves.items():
        save_file({k: state[k].clone().contiguous() for k in keys}, str(sharded / file))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in halves.items() for k in keys}}))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(T5_CONFIG))
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    native = load_rationale_model(native_dir).state_dict()
    for path in (single, sharded, legacy):
        loaded = load_mmcot_rationale_model(path, (P, D)).state_dict()
        assert all(torch.equal(v, native[k]) for k, v in loaded.items()), path.name


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("encoder.gate_dense.bias"), "encoder.gate_dense.bias"),  # a fusion weight missing
    (lambda s: s.pop("decoder.block.1.layer.2.DenseReluDense.wo.weight"), "decoder.block.1.layer.2.DenseReluDense.wo.weight"),
    (lambda s: s.update({"encoder.mha_layer.bias_k": torch.zeros(1, 1, 16)}), "encoder.mha_layer.bias_k"),  # unexpected
    (lambda s: s.update({"encoder.visual_proj.weight": torch.zeros(16, D)}), "encoder.visual_proj.weight"),
    (lambda s: s.pop("lm_head.weight"), "lm_head.weight"),  # untied in the config: it must be there
])
def test_a_missing_or_unexpected_weight_is_an_error_naming_it(checkpoints, tmp_path, change, named):
    state = mmcot_state(checkpoints[0])
    change(state)
    path = write_mmcot_checkpoint(tmp_path / "bad", state)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_mmcot_rationale_model(path, (P, D))


def test_features_of_another_dim_or_a_plain_t5_fail_clearly(checkpoints, tmp_path):
    _, native_dir, mmcot_dir = checkpoints
    with pytest.raises(CheckpointError, match=r"encoder\.image_dense\.weight takes 12-dim patches"):
        load_mmcot_rationale_model(mmcot_dir, (145, 1024))
    plain = {k: v for k, v in mmcot_state(checkpoints[0]).items() if not k.startswith(tuple(
        n.rsplit(".", 1)[0] for n in MMCOT_FUSION.values()))}
    with pytest.raises(CheckpointError, match="plain T5 checkpoint"):
        load_mmcot_rationale_model(write_mmcot_checkpoint(tmp_path / "plain", plain), (P, D))
    with pytest.raises(CheckpointError, match="aresnb model already"):
        load_mmcot_rationale_model(native_dir, (P, D))


def test_model_init_from_builds_the_run_model_from_the_checkpoint(checkpoints, tmp_path):
    """build_rationale_model (what stage 02 calls) takes model.init_from over model.base, and fits the
    patch count to the data's features (MM-CoT's attention takes any number of patches)."""
    original, _, mmcot_dir = checkpoints
    cfg = load_config(None, [f"model.init_from={mmcot_dir}", "model.use_image=false"])

    class Tokenizer:  # the length is all build_rationale_model asks of it
        def __len__(self):
            return VOCAB

    model = build_rationale_model(cfg, Tokenizer(), (3, P + 2, D))
    assert model.config.image_num_tokens == P + 2 and not model.config.use_image
    assert torch.equal(model.image_fusion.gate.weight, original.image_fusion.gate.weight)
    assert model.generation_config.decoder_start_token_id == 0


def test_stage_02_without_training_saves_and_evaluates_the_mmcot_model(tmp_path):
    """baseline.train false: stage 02 saves MM-CoT's model as 02_baseline/model in aresnb's format (what
    every later stage loads) and writes its greedy rationales; nothing trains."""
    feature_dim, vocab = 16, 300
    config = {**T5_CONFIG, "vocab_size": vocab}
    torch.manual_seed(0)
    base = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    model = MultimodalT5ForConditionalGeneration(MultimodalT5Config(**base, image_feature_dim=feature_dim))
    mmcot_dir = write_mmcot_checkpoint(tmp_path / "mm-cot-tiny-rationale", mmcot_state(model), config=config)
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.name=eval_only", "data.synthetic.n_train=8",
                             "data.synthetic.n_val=3", "data.synthetic.n_test=3", f"features.tiny_hidden_size={feature_dim}",
                             "features.tiny_layers=1", f"model.vocab_size={vocab}", "baseline.gen_max_new_tokens=8",
                             f"model.init_from={mmcot_dir}", "baseline.train=false"])
    paths = RunPaths(cfg)
    data.run(cfg, paths)
    summary = baseline.run(cfg, paths)
    assert summary["train"]["trained"] is False and summary["train"]["steps"] == 0
    assert summary["train"]["init_from"] == str(mmcot_dir)
    assert not paths.metrics_file("02_baseline").exists() and not (paths.stage_dir("02_baseline") / "checkpoints").exists()
    saved = load_rationale_model(paths.baseline_model_dir)  # how stages 03-06 read the baseline
    want = load_mmcot_rationale_model(mmcot_dir, (17, feature_dim))
    assert all(torch.equal(v, want.state_dict()[k]) for k, v in saved.state_dict().items())
    for split in ("val", "test"):
        assert len(read_jsonl(paths.rationales_file("baseline", split))) == 3
    assert 0.0 <= summary["val"]["token_accuracy"] <= 1.0
    assert "not trained here" in baseline_body(summary, paths)
    assert baseline.load(cfg, paths).metrics == []
