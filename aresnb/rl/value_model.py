"""The PPO critic: an MLP value head on the last decoder hidden state of a seq2seq model.

ARES uses a *separate* copy of the rationale model as the critic (``shared=False``); the option
``shared=True`` puts the head on the policy's own trunk (one forward pass gives logits and values).

On disk (``save_pretrained``): the backbone in Hugging Face format (separate critic only), plus
``value_head.safetensors`` and ``value_head.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from aresnb.model.multimodal_t5 import load_rationale_model

HEAD_WEIGHTS = "value_head.safetensors"
HEAD_CONFIG = "value_head.json"


class ValueHead(nn.Module):
    """Linear(d -> 2d), ReLU, Linear(2d -> 1): the paper's value MLP."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.ReLU(), nn.Linear(2 * hidden_size, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(hidden).squeeze(-1)


def encode_sources(model: nn.Module, batch: dict[str, torch.Tensor]) -> BaseModelOutput:
    """Encoder states of the batch's sources (fused with the image for the multimodal model)."""
    if hasattr(model, "encode"):
        return model.encode(batch["input_ids"], batch["attention_mask"], batch.get("image_features"))
    return model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def decoder_inputs(batch: dict[str, torch.Tensor], encoded: BaseModelOutput) -> dict[str, Any]:
    """Inputs of a forward that reuses ``encoded``: row i of the responses reads source
    ``batch["source_index"][i]`` (the k samples of a prompt share one encoder pass)."""
    index = batch.get("source_index")
    states, mask = encoded.last_hidden_state, batch["attention_mask"]
    if index is not None:
        states, mask = states[index], mask[index]
    return {"encoder_outputs": BaseModelOutput(last_hidden_state=states), "attention_mask": mask,
            "decoder_input_ids": batch["decoder_input_ids"], "decoder_attention_mask": batch.get("decoder_attention_mask")}


class Seq2SeqValueModel(nn.Module):
    """V(s_t) for every decoder position t: ``values[b, t]`` scores the state before token t."""

    def __init__(self, backbone: nn.Module, shared: bool = False, head: ValueHead | None = None):
        super().__init__()
        hidden = backbone.config.d_model
        self.shared = shared
        self.head = head if head is not None else ValueHead(hidden)
        if shared:
            # Not a submodule: the trunk's weights belong to the policy (no duplicate parameters).
            object.__setattr__(self, "_trunk", backbone)
        else:
            self.backbone = backbone

    @property
    def trunk(self) -> nn.Module:
        return self._trunk if self.shared else self.backbone

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Values of a batch (``input_ids``, ``attention_mask``, ``decoder_input_ids``, optional
        ``decoder_attention_mask``, ``image_features``, ``source_index``). The trunk's encoder and
        decoder run; its vocabulary projection does not (a value needs none)."""
        inputs = decoder_inputs(batch, encode_sources(self.trunk, batch))
        hidden = self.trunk.get_decoder()(
            input_ids=inputs["decoder_input_ids"], attention_mask=inputs["decoder_attention_mask"],
            encoder_hidden_states=inputs["encoder_outputs"].last_hidden_state,
            encoder_attention_mask=inputs["attention_mask"]).last_hidden_state
        return self.head(hidden)

    # ---- Hugging Face style persistence ---------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, **kwargs: Any) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not self.shared:
            self.backbone.save_pretrained(out_dir, **kwargs)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(out_dir / HEAD_WEIGHTS))
        (out_dir / HEAD_CONFIG).write_text(json.dumps({"hidden_size": self.head.hidden_size, "shared": self.shared}) + "\n")
        return out_dir

    @classmethod
    def from_pretrained(cls, path: str | Path, policy: nn.Module | None = None) -> "Seq2SeqValueModel":
        """Load a critic; a shared-trunk critic needs the ``policy`` whose trunk it uses."""
        path = Path(path)
        if not (path / HEAD_CONFIG).exists():
            raise FileNotFoundError(f"{path}: no {HEAD_CONFIG}; not a value model saved by Seq2SeqValueModel.save_pretrained")
        meta = json.loads((path / HEAD_CONFIG).read_text())
        head = ValueHead(int(meta["hidden_size"]))
        head.load_state_dict(load_file(str(path / HEAD_WEIGHTS)))
        if meta["shared"]:
            if policy is None:
                raise ValueError(f"{path}: a shared-trunk value model needs the policy passed as policy=")
            return cls(policy, shared=True, head=head)
        return cls(load_seq2seq_backbone(path), shared=False, head=head)

    @classmethod
    def from_policy(cls, policy: nn.Module, shared: bool = False) -> "Seq2SeqValueModel":
        """A fresh critic: a deep copy of the policy (the paper) or a head on its trunk."""
        backbone = policy if shared else copy.deepcopy(policy)
        return cls(backbone, shared=shared)


def load_seq2seq_backbone(path: str | Path) -> nn.Module:
    """Load a saved seq2seq model: the project's multimodal T5 when config.json says so, else Auto."""
    config = json.loads((Path(path) / "config.json").read_text())
    if config.get("model_type") == "multimodal_t5":
        return load_rationale_model(path)
    return AutoModelForSeq2SeqLM.from_pretrained(path)
