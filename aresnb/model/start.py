"""The rationale model a run starts from (stage 02): MM-CoT's released checkpoint (``model.init_from``,
its weights renamed by :mod:`aresnb.model.mmcot`), else ``model.base`` -- 'tiny', a small T5 built
from the model section, or a T5-family checkpoint given fresh image-fusion layers."""

from __future__ import annotations

from typing import Any

import torch

from aresnb.config.sections import Config
from aresnb.model.mmcot import load_mmcot_rationale_model
from aresnb.model.multimodal_t5 import (MultimodalT5Config, MultimodalT5ForConditionalGeneration, load_rationale_model,
                                        sync_generation_config)


def build_rationale_model(cfg: Config, tokenizer: Any, feature_shape: tuple[int, ...]) -> MultimodalT5ForConditionalGeneration:
    """The rationale model a run starts from: ``model.init_from`` (an MM-CoT checkpoint, its
    fusion weights renamed), else ``model.base`` ('tiny': a small T5 from config; else loaded, and
    given fresh fusion layers when it has none)."""
    m = cfg.model
    patches, dim = int(feature_shape[-2]), int(feature_shape[-1])
    torch.manual_seed(cfg.run.seed)
    if m.init_from:
        model = load_mmcot_rationale_model(m.init_from, (patches, dim), use_image=m.use_image)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
    elif m.base == "tiny":
        config = MultimodalT5Config(
            vocab_size=len(tokenizer),
            d_model=m.d_model,
            d_ff=m.d_ff,
            d_kv=m.d_kv,
            num_heads=m.num_heads,
            num_layers=m.num_layers,
            num_decoder_layers=m.num_decoder_layers,
            dropout_rate=m.dropout,
            feed_forward_proj="gated-gelu",  # as Flan-T5 / Flan-Alpaca
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            image_feature_dim=dim,
            image_num_tokens=patches,
            use_image=m.use_image,
        )
        model = MultimodalT5ForConditionalGeneration(config)
    else:
        model = load_rationale_model(m.base, feature_shape=(patches, dim), use_image=m.use_image)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
    sync_generation_config(model)
    return model
