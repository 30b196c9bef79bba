"""MM-CoT's rationale checkpoints in: its own weight names mapped onto aresnb's model.

ARES starts from MM-CoT's released rationale models (``mm-cot-base-rationale``,
``mm-cot-large-rationale``). They are ``save_pretrained`` directories of MM-CoT's
``T5ForMultimodalGeneration``: a plain T5 ``config.json`` (model_type "t5"; the patch shape is a
constructor argument there, not a config field) and ``pytorch_model.bin`` (or safetensors). Every
T5 weight has the name aresnb's model gives it; the image fusion lives inside MM-CoT's encoder
under names of its own:

    MM-CoT checkpoint                            aresnb (MultimodalT5ForConditionalGeneration)
    encoder.image_dense.{weight,bias}            image_fusion.image_proj.{weight,bias}
    encoder.mha_layer.in_proj_{weight,bias}      image_fusion.attention.in_proj_{weight,bias}
    encoder.mha_layer.out_proj.{weight,bias}     image_fusion.attention.out_proj.{weight,bias}
    encoder.gate_dense.{weight,bias}             image_fusion.gate.{weight,bias}

The computation is the same one: MM-CoT fuses the encoder's output (after its final layer norm
and dropout) with a one-head ``nn.MultiheadAttention`` over the projected patches and a sigmoid
gate, which is what :class:`aresnb.model.multimodal_t5.ImageFusion` does with the encoder's output.

Loading renames the checkpoint's weights and hands them to ``from_pretrained`` (as a
``state_dict``, so the model saves under aresnb's names afterwards), and is strict: a weight of
aresnb's model that the checkpoint lacks, or a checkpoint weight that lands nowhere, is an error
naming it (in MM-CoT's terms). The only allowances are transformers' own: names tied to one
tensor (``shared`` / ``*.embed_tokens``) need one copy, and
``decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight`` (carried by old T5
checkpoints, never read) is ignored, as MM-CoT's class ignores it. An untied ``lm_head`` (Flan-T5,
``tie_word_embeddings: false``) must be in the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import T5Config

from aresnb.model.multimodal_t5 import MODEL_TYPE, MultimodalT5Config, MultimodalT5ForConditionalGeneration

# MM-CoT's prefix -> aresnb's prefix, for the three fusion modules.
FUSION_PREFIXES = {
    "encoder.image_dense.": "image_fusion.image_proj.",
    "encoder.mha_layer.": "image_fusion.attention.",
    "encoder.gate_dense.": "image_fusion.gate.",
}
IMAGE_DENSE_WEIGHT = "encoder.image_dense.weight"  # (d_model, patch_dim): where the feature dim is read
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """An MM-CoT checkpoint that cannot become aresnb's model as it is (names the weights)."""


def aresnb_name(name: str) -> str:
    """MM-CoT's name of a weight -> aresnb's."""
    for mm, ours in FUSION_PREFIXES.items():
        if name.startswith(mm):
            return ours + name[len(mm):]
    return name


def mmcot_name(name: str) -> str:
    """aresnb's name of a weight -> MM-CoT's (for error messages in the checkpoint's own terms)."""
    for mm, ours in FUSION_PREFIXES.items():
        if name.startswith(ours):
            return mm + name[len(ours):]
    return name


def weight_files(path: str | Path) -> list[Path]:
    """The checkpoint's weight files: one file, or the shards a ``*.index.json`` lists."""
    path = Path(path)
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
        index = path / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [path / s for s in shards]
    raise CheckpointError(f"{path}: no weights ({' or '.join(WEIGHT_FILES)}, or a sharded index of one)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every weight of the checkpoint under its own (MM-CoT's) name; zip-format .bin files are
    memory-mapped, so a Large checkpoint is not held in RAM twice while the model loads."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        if file.suffix == ".safetensors":
            state.update(load_file(str(file)))
            continue
        try:
            state.update(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
        except RuntimeError:  # a legacy (non-zip) torch.save file cannot be memory-mapped
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def read_mmcot_config(path: str | Path, shapes: dict[str, tuple[int, ...]],
                      feature_shape: tuple[int, int]) -> MultimodalT5Config:
    """aresnb's config for an MM-CoT checkpoint: its T5 fields plus the image shape.

    ``shapes``: the checkpoint's weight shapes by MM-CoT's names. The feature dim is the
    checkpoint's (``encoder.image_dense``'s input); it must equal the data's. The patch count is the
    data's: MM-CoT's attention takes any number of patches.
    """
    path = Path(path)
    raw = T5Config.get_config_dict(str(path))[0]
    if raw.get("model_type") == MODEL_TYPE:
        raise CheckpointError(f"{path} is an aresnb model already (model_type {MODEL_TYPE!r}): give it as model.base")
    if raw.get("model_type") != "t5":
        raise CheckpointError(f"{path}: model_type {raw.get('model_type')!r}; an MM-CoT checkpoint has a T5 config")
    if IMAGE_DENSE_WEIGHT not in shapes:
        fusion = sorted(k for k in shapes if any(p in k for p in ("image_dense", "mha_layer", "gate_dense")))
        raise CheckpointError(f"{path}: no {IMAGE_DENSE_WEIGHT} (MM-CoT's image projection); "
                              + (f"found {fusion} instead" if fusion else "is this a plain T5 checkpoint? give it as model.base"))
    patch_dim = int(shapes[IMAGE_DENSE_WEIGHT][1])
    if patch_dim != int(feature_shape[1]):
        raise CheckpointError(f"{path}: {IMAGE_DENSE_WEIGHT} takes {patch_dim}-dim patches but the data's features are "
                              f"{tuple(feature_shape)} (patches, dim): use the features the checkpoint was trained on")
    if raw.get("tie_word_embeddings") is False and "lm_head.weight" not in shapes:
        raise CheckpointError(f"{path}: missing lm_head.weight (the config unties it from shared.weight)")
    base = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "transformers_version")}
    return MultimodalT5Config(**base, image_num_tokens=int(feature_shape[0]), image_feature_dim=patch_dim)


def load_mmcot_rationale_model(path: str | Path, feature_shape: tuple[int, int],
                               use_image: bool | None = None) -> MultimodalT5ForConditionalGeneration:
    """An MM-CoT rationale checkpoint directory as aresnb's model, every weight accounted for.

    ``feature_shape`` = (patches, dim) of the data's image features.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"MM-CoT checkpoint directory not found: {path} (model.init_from)")
    state = read_state_dict(path)
    config = read_mmcot_config(path, {k: tuple(v.shape) for k, v in state.items()}, feature_shape)
    if use_image is not None:
        config.use_image = bool(use_image)
    model, info = MultimodalT5ForConditionalGeneration.from_pretrained(
        None, config=config, state_dict={aresnb_name(k): v for k, v in state.items()}, dtype=torch.float32,
        output_loading_info=True)
    # a mismatched key may come as (name, shape in checkpoint, shape in model)
    problems = {kind: sorted(mmcot_name(k) if isinstance(k, str) else f"{mmcot_name(k[0])} {tuple(k[1:])}"
                             for k in info.get(kind) or ())
                for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems["error_msgs"] = list(info.get("error_msgs") or ())
    if any(problems.values()):
        found = "; ".join(f"{kind.replace('_', ' ')}: {', '.join(map(str, names))}"
                          for kind, names in problems.items() if names)
        raise CheckpointError(f"{path} does not map onto aresnb's model weight for weight ({found})")
    model.eval()
    return model
