"""Vision features: one extractor interface, one real implementation, a disk cache.

``VisionFeatureExtractor`` loads any transformers vision model by hub id or local directory
(``AutoImageProcessor`` + ``AutoModel``) and returns ``last_hidden_state`` per image: (145, 1024)
for the paper's ``google/vit-large-patch32-384``. The embedded default builds a tiny ViT from a
``ViTConfig`` with a fixed seed, ``save_pretrained``s it into the run and loads it back through
the very same ``from_pretrained`` path. Features are cached per image under a key made of the
image file's hash and the model's fingerprint, so re-runs skip work; problems without an image
get zeros.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, ViTConfig, ViTModel

try:  # transformers 5: the PIL-backed processor (the default one wants torchvision)
    from transformers import ViTImageProcessorPil as ViTImageProcessor
except ImportError:
    from transformers import ViTImageProcessor

from .schema import DataError

DEFAULT_HUB_MODEL = "google/vit-large-patch32-384"


class FeatureExtractor(Protocol):
    """What stage 01 needs from a vision model."""

    model_id: str

    @property
    def feature_shape(self) -> tuple[int, int]: ...

    def extract(self, image_paths: list[str]) -> np.ndarray:
        """(N, P, D) features; an empty path gives zeros."""
        ...


def build_tiny_vit(out_dir: str | Path, image_size: int = 32, patch_size: int = 8, hidden_size: int = 64,
                   num_layers: int = 2, seed: int = 0) -> Path:
    """A tiny randomly initialised ViT (+ its image processor), saved with ``save_pretrained``.

    Random features are enough here: the patch embedding is a linear map of the pixels, so flat
    colours, areas and outlines stay linearly readable ((image/patch)^2 + 1 tokens of hidden_size).
    """
    out = Path(out_dir)
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32), intermediate_size=hidden_size * 2, num_channels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = ViTModel(config).eval()  # with its pooler, so AutoModel finds every weight
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, do_resize=True,
                                  do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class VisionFeatureExtractor:
    """A transformers vision model by hub id or local dir -> (N, P, D) ``last_hidden_state``."""

    def __init__(self, model_name_or_path: str, batch_size: int = 32, dtype: str = "float32",
                 cache_dir: str | Path | None = None, device: str | None = None):
        self.model_id = str(model_name_or_path)
        try:
            self.processor = AutoImageProcessor.from_pretrained(self.model_id)
            model, info = AutoModel.from_pretrained(self.model_id, output_loading_info=True)
        except OSError as e:
            raise OSError(
                f"could not load the vision model {self.model_id!r}: {e}. Offline, pass a local directory "
                "(features.model=<dir with config.json + weights + preprocessor_config.json>) or use "
                "features.model=tiny."
            ) from e
        # Dual-tower models (CLIP, SigLIP) keep the image encoder in .vision_model.
        self.model = getattr(model, "vision_model", model).eval()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # Heads the checkpoint lacks (e.g. ViTModel's pooler) are freshly random: keep them out of the key.
        self._missing = set(info.get("missing_keys", ()))
        self.fingerprint = self._fingerprint()
        self._shape: tuple[int, int] | None = None

    def _fingerprint(self) -> str:
        """Model id + config + a sample of every weight: a changed model never reuses stale features."""

        h = hashlib.sha256(self.model_id.encode())
        h.update(self.model.config.to_json_string().encode())
        h.update(json.dumps(self.processor.to_dict(), sort_keys=True, default=str).encode())
        with torch.no_grad():
            for name, p in self.model.state_dict().items():
                if name in self._missing:
                    continue
                h.update(name.encode())
                h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
        h.update(self.dtype.str.encode())
        return h.hexdigest()[:16]

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(P, D), from one forward pass on a blank image (works for any ViT-like model)."""
        if self._shape is None:

            self._shape = tuple(self._forward([Image.new("RGB", (32, 32))]).shape[1:])  # type: ignore[assignment]
        return self._shape  # type: ignore[return-value]

    def _forward(self, images: list) -> np.ndarray:

        inputs = self.processor(images=images, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(pixel_values=inputs["pixel_values"].to(self.device))
        return out.last_hidden_state.float().cpu().numpy().astype(self.dtype)

    def _cache_file(self, digest: str) -> Path | None:
        return self.cache_dir / self.fingerprint / digest[:2] / f"{digest}.npy" if self.cache_dir else None

    def extract(self, image_paths: list[str], out: np.ndarray | None = None) -> np.ndarray:
        """(N, P, D) features, row-aligned with ``image_paths``; "" -> zeros; counts in ``last_stats``.

        ``out`` may be a zero-filled (memory-mapped) array to write into: ScienceQA's train split at
        (145, 1024) float32 is ~7.5 GB, more than it is wise to hold in RAM.
        """

        P, D = self.feature_shape
        if out is None:
            out = np.zeros((len(image_paths), P, D), dtype=self.dtype)
        elif out.shape != (len(image_paths), P, D):
            raise ValueError(f"out has shape {out.shape}, expected {(len(image_paths), P, D)}")
        todo: dict[str, list[int]] = {}  # digest -> rows (an image shared by problems runs once)
        files: dict[str, str] = {}
        hits = 0
        for i, path in enumerate(image_paths):
            if not path:
                continue
            digest = file_sha256(path)
            cached = self._cache_file(digest)
            if cached is not None and cached.exists():
                out[i] = np.load(cached)
                hits += 1
                continue
            todo.setdefault(digest, []).append(i)
            files[digest] = path
        digests = list(todo)
        for start in range(0, len(digests), self.batch_size):
            batch = digests[start:start + self.batch_size]
            images = []
            for d in batch:
                try:
                    with Image.open(files[d]) as im:
                        images.append(im.convert("RGB"))
                except Exception as e:  # noqa: BLE001 - the loaders verify images; decoding can still fail
                    raise DataError(f"unreadable image {files[d]} ({type(e).__name__}: {e}); "
                                    "data.missing_image decides for images found unreadable at load time") from None
            feats = self._forward(images)
            for d, f in zip(batch, feats):
                for i in todo[d]:
                    out[i] = f
                cached = self._cache_file(d)
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(".tmp.npy")
                    np.save(tmp, f)
                    tmp.replace(cached)
        self.last_stats = {"images": sum(1 for p in image_paths if p), "cache_hits": hits, "computed": len(digests)}
        return out


def open_extractor(features_cfg, run_model_dir: str | Path, cache_dir: str | Path | None, seed: int = 0) -> VisionFeatureExtractor:
    """``features.model``: 'tiny' builds (once) and loads the tiny ViT; anything else is a hub id / dir."""
    model = features_cfg.model
    if model == "tiny":
        run_model_dir = Path(run_model_dir)
        build_tiny_vit(run_model_dir, features_cfg.tiny_image_size, features_cfg.tiny_patch_size,
                       features_cfg.tiny_hidden_size, features_cfg.tiny_layers, seed=seed)
        model = str(run_model_dir)
    return VisionFeatureExtractor(model, batch_size=features_cfg.batch_size, dtype=features_cfg.dtype, cache_dir=cache_dir)
