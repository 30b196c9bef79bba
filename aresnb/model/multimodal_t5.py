"""MM-CoT's multimodal rationale model: a T5 encoder-decoder with gated image fusion.

    H       = encoder(text)                                   (B, T, d)
    H_img   = Linear(patch_dim -> d)(image_features)          (B, P, d)
    H_att   = MultiheadAttention(d, 1 head)(H, H_img, H_img)  text queries, image keys/values
    g       = sigmoid(Linear(2d -> d)([H; H_att]))
    H_fused = (1 - g) * H + g * H_att                         -> decoder cross-attention

The fused states are computed through T5's public encoder and handed to the stock
``T5ForConditionalGeneration.forward`` / ``generate`` as ``encoder_outputs``, so nothing here
depends on T5 internals. The text attention mask still masks padding for the decoder; image
tokens are never masked. Problems without an image (or ``use_image=False``) get zero features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import logging as hf_logging

# transformers draws a tqdm bar each time it loads or writes a checkpoint ("Loading weights",
# "Writing model shards"): for these one-shard models a notebook shows them frozen at 0%. The
# stages print their own progress lines (aresnb.progress).
hf_logging.disable_progress_bar()

MODEL_TYPE = "multimodal_t5"


class MultimodalT5Config(T5Config):
    """T5Config plus the shape of the image features and the image switch."""

    model_type = MODEL_TYPE

    def __init__(self, image_feature_dim: int = 64, image_num_tokens: int = 17, use_image: bool = True, **kwargs: Any):
        self.image_feature_dim = image_feature_dim
        self.image_num_tokens = image_num_tokens
        self.use_image = use_image
        super().__init__(**kwargs)


class ImageFusion(nn.Module):
    """Gated single-head cross-attention from text states to projected image patches (MM-CoT)."""

    def __init__(self, d_model: int, image_feature_dim: int):
        super().__init__()
        self.image_proj = nn.Linear(image_feature_dim, d_model)
        self.attention = nn.MultiheadAttention(d_model, num_heads=1, batch_first=True)
        self.gate = nn.Linear(2 * d_model, d_model)
        # transformers initialises leaf modules only; this flag routes these three to the
        # T5-style init in MultimodalT5ForConditionalGeneration._init_weights.
        for linear in (self.image_proj, self.gate, self.attention.out_proj):
            linear.is_fusion_linear = True

    def forward(self, text_states: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        image_states = self.image_proj(image_features)
        attended, _ = self.attention(text_states, image_states, image_states, need_weights=False)
        gate = torch.sigmoid(self.gate(torch.cat([text_states, attended], dim=-1)))
        return (1 - gate) * text_states + gate * attended


class MultimodalT5ForConditionalGeneration(T5ForConditionalGeneration):
    """The rationale model; ``forward`` / ``generate`` take ``image_features`` (B, P, D)."""

    config_class = MultimodalT5Config

    def __init__(self, config: MultimodalT5Config):
        super().__init__(config)
        self.image_fusion = ImageFusion(config.d_model, config.image_feature_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # init.* skips parameters loaded from a checkpoint, so only fresh fusion layers change.
        if isinstance(module, nn.Linear) and getattr(module, "is_fusion_linear", False):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_factor * module.in_features**-0.5)
            init.zeros_(module.bias)

    # ---- image features -----------------------------------------------------------------
    def image_features_or_zeros(self, image_features: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """The features to fuse: zeros when absent or when ``config.use_image`` is off."""
        cfg = self.config
        dtype = self.image_fusion.image_proj.weight.dtype
        device = self.image_fusion.image_proj.weight.device
        if image_features is None or not cfg.use_image:
            return torch.zeros(batch_size, cfg.image_num_tokens, cfg.image_feature_dim, dtype=dtype, device=device)
        if image_features.dim() != 3 or image_features.shape[0] != batch_size or image_features.shape[-1] != cfg.image_feature_dim:
            raise ValueError(
                f"image_features must have shape (batch={batch_size}, patches, {cfg.image_feature_dim}); "
                f"got {tuple(image_features.shape)}"
            )
        return image_features.to(device=device, dtype=dtype)

    def encode(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """Text encoder output fused with the image: what the decoder attends to."""
        enc = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        text_states = enc.last_hidden_state
        features = self.image_features_or_zeros(image_features, text_states.shape[0])
        fused = self.image_fusion(text_states, features)
        return BaseModelOutput(last_hidden_state=fused, hidden_states=enc.hidden_states, attentions=enc.attentions)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        if encoder_outputs is None:
            enc_kwargs = {k: kwargs[k] for k in ("output_attentions", "output_hidden_states") if k in kwargs}
            encoder_outputs = self.encode(input_ids, attention_mask, image_features, inputs_embeds=inputs_embeds, **enc_kwargs)
        return super().forward(
            attention_mask=attention_mask,
            encoder_outputs=encoder_outputs,
            labels=labels,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **gen_kwargs: Any,
    ) -> torch.Tensor:
        """``GenerationMixin.generate`` with the fused encoder output computed once up front."""
        if gen_kwargs.get("encoder_outputs") is None:
            gen_kwargs["encoder_outputs"] = self.encode(input_ids, attention_mask, image_features)
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **gen_kwargs)


AutoConfig.register(MODEL_TYPE, MultimodalT5Config, exist_ok=True)
AutoModelForSeq2SeqLM.register(MultimodalT5Config, MultimodalT5ForConditionalGeneration, exist_ok=True)


# ---- building and loading --------------------------------------------------------------------


def _is_local(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir()


def _read_config(path: str) -> dict:
    """config.json of a local dir or a hub id; offline hub ids fail with a clear message."""
    try:
        return T5Config.get_config_dict(path)[0]
    except OSError as e:
        where = "local directory" if _is_local(path) else "Hugging Face hub id"
        raise OSError(
            f"cannot load the rationale model from {path!r} ({where}): {e}. Offline, download the "
            "checkpoint elsewhere (e.g. `huggingface-cli download declare-lab/flan-alpaca-base`) and set "
            "model.base to the local directory."
        ) from e


def load_rationale_model(
    path: str | Path,
    feature_shape: tuple[int, int] | None = None,
    use_image: bool | None = None,
) -> MultimodalT5ForConditionalGeneration:
    """Load a saved rationale model, or a plain T5-family checkpoint plus fresh fusion layers.

    ``feature_shape`` = (patches, feature_dim) is required for a plain T5 checkpoint (it has no
    image fusion yet); for a saved multimodal model it is checked against the saved config.
    """
    path = str(path)
    raw = _read_config(path)
    if raw.get("model_type") == MODEL_TYPE:
        config = MultimodalT5Config.from_pretrained(path)
        if feature_shape is not None and (config.image_num_tokens, config.image_feature_dim) != tuple(feature_shape):
            # Patch count only matters for the zero features; the feature dim must match.
            if config.image_feature_dim != feature_shape[1]:
                raise ValueError(
                    f"{path}: the model fuses {config.image_feature_dim}-dim image features but the data has "
                    f"{feature_shape[1]}-dim features (feature_shape={tuple(feature_shape)})"
                )
            config.image_num_tokens = int(feature_shape[0])
    elif raw.get("model_type") == "t5" or "T5ForConditionalGeneration" in (raw.get("architectures") or []):
        if feature_shape is None:
            raise ValueError(f"{path} is a plain T5 checkpoint: give feature_shape=(patches, dim) to add image fusion")
        base = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "transformers_version")}
        config = MultimodalT5Config(**base, image_num_tokens=int(feature_shape[0]), image_feature_dim=int(feature_shape[1]))
    else:
        raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not a T5-family encoder-decoder")
    if use_image is not None:
        config.use_image = bool(use_image)
    model = MultimodalT5ForConditionalGeneration.from_pretrained(path, config=config)
    sync_generation_config(model)
    return model


def sync_generation_config(model: T5ForConditionalGeneration) -> None:
    """Generation must start from the decoder start token and stop at EOS, whatever the checkpoint says."""
    gc = model.generation_config
    gc.decoder_start_token_id = model.config.decoder_start_token_id
    gc.pad_token_id = model.config.pad_token_id
    gc.eos_token_id = model.config.eos_token_id


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each T5 block's activations in the backward pass (``model.gradient_checkpointing``).

    Non-reentrant checkpointing: it works with frozen inputs (LoRA) and under DDP. A peft model
    is switched on through its base model. Checkpointing acts only in training mode.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.activation_checkpointing_enable({"use_reentrant": False})
    base.config.use_cache = False


def zero_attention_dropout(model: nn.Module) -> None:
    """Set the functional dropout rate T5's attention keeps as a float to 0 (``nn.Dropout``
    modules are a separate matter): with it, training mode draws no dropout at all."""
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe_model(model: MultimodalT5ForConditionalGeneration) -> dict:
    """Size and shape facts for summaries."""
    c = model.config
    return {
        "parameters": count_parameters(model),
        "fusion_parameters": count_parameters(model.image_fusion),
        "d_model": c.d_model,
        "layers": [c.num_layers, c.num_decoder_layers],
        "vocab_size": c.vocab_size,
        "image_features": [c.image_num_tokens, c.image_feature_dim],
        "use_image": c.use_image,
    }


def model_dir_has_weights(path: str | Path) -> bool:
    """True when ``path`` holds a saved model (config + weights), not just an empty stage folder."""
    path = Path(path)
    weights = any(path.glob("*.safetensors")) or (path / "pytorch_model.bin").exists()
    return (path / "config.json").exists() and weights
