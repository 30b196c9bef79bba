"""Vision features: shape, zeros for no-image rows, the on-disk cache, informativeness."""


import numpy as np
import pytest

from aresnb.config import load_config
from aresnb.data.features import VisionFeatureExtractor, build_tiny_vit, open_extractor
from aresnb.data.synthetic import render_image
from aresnb.data.synthetic_grader import COLOURS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    model_dir = build_tiny_vit(root / "model", image_size=32, patch_size=8, hidden_size=64, num_layers=2, seed=0)
    return root, model_dir


def test_shape_zeros_and_cache(tiny):
    root, model_dir = tiny
    images = []
    for i, colour in enumerate(["red", "blue"]):
        path = root / f"{i}.png"
        render_image([{"shape": "circle", "colour": colour, "cx": 0.5, "cy": 0.5, "r": 0.3}], 32).save(path)
        images.append(str(path))
    ex = VisionFeatureExtractor(str(model_dir), batch_size=1, cache_dir=root / "cache")
    assert ex.feature_shape == (17, 64)
    feats = ex.extract([images[0], "", images[1], images[0]])
    assert feats.shape == (4, 17, 64) and feats.dtype == np.float32
    assert not feats[1].any() and feats[0].any()
    np.testing.assert_array_equal(feats[0], feats[3])
    assert ex.last_stats == {"images": 3, "cache_hits": 0, "computed": 2}
    # A fresh extractor of the same model reuses the cache; the features are identical.
    again = VisionFeatureExtractor(str(model_dir), cache_dir=root / "cache")
    np.testing.assert_array_equal(again.extract(images), feats[[0, 2]])
    assert again.last_stats["cache_hits"] == 2 and again.last_stats["computed"] == 0


def test_changed_model_does_not_reuse_cache(tiny, tmp_path):
    _, model_dir = tiny
    images = []
    for i, colour in enumerate(["red", "green", "blue"]):
        images.append(str(tmp_path / f"{colour}.png"))
        render_image([{"shape": "square", "colour": colour, "cx": 0.5, "cy": 0.5, "r": 0.3}], 32).save(images[-1])
    cache = tmp_path / "shared_cache"
    first = VisionFeatureExtractor(str(model_dir), cache_dir=cache).extract(images)
    other = build_tiny_vit(tmp_path / "other", seed=1)  # same architecture, other weights
    ex = VisionFeatureExtractor(str(other), cache_dir=cache)
    theirs = ex.extract(images)
    assert ex.last_stats == {"images": 3, "cache_hits": 0, "computed": 3}  # nothing taken from the first model
    assert not np.allclose(theirs, first)
    np.testing.assert_array_equal(theirs, VisionFeatureExtractor(str(other)).extract(images))  # its own features
    again = VisionFeatureExtractor(str(model_dir), cache_dir=cache)
    np.testing.assert_array_equal(again.extract(images), first)  # both models' entries live side by side
    assert again.last_stats["cache_hits"] == 3


def test_open_extractor_tiny_goes_through_from_pretrained(tmp_path):
    cfg = load_config(None, ["features.tiny_hidden_size=32", "features.dtype=float16"])
    ex = open_extractor(cfg.features, tmp_path / "vision_model", None)
    assert (tmp_path / "vision_model" / "config.json").exists()
    assert ex.model_id == str(tmp_path / "vision_model")
    assert ex.feature_shape == (17, 32)
    assert ex.extract([""]).dtype == np.float16


def test_unknown_model_clear_error(tmp_path):
    with pytest.raises(OSError, match="features.model"):
        VisionFeatureExtractor(str(tmp_path / "no_such_model"))


def test_tiny_features_separate_colours(tmp_path):
    """Mean-pooled features of a random tiny ViT tell flat colours apart (nearest centroid, 16
    held-out images, chance 25%). Not one lucky network: four seeds (seen: 15/16 for seed 0, 16/16
    for seeds 1-5), each at least 12/16 and 58/64 over all four."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(48):
        colour = list(COLOURS)[i % 4]
        shape = ["circle", "square", "triangle"][i % 3]
        obj = {"shape": shape, "colour": colour, "cx": 0.5 + rng.uniform(-0.06, 0.06),
               "cy": 0.5 + rng.uniform(-0.06, 0.06), "r": rng.uniform(0.3, 0.36)}
        path = tmp_path / f"{i}.png"
        render_image([obj], 32).save(path)
        paths.append(str(path))
        labels.append(i % 4)
    labels = np.array(labels)
    train, test = np.arange(48) < 32, np.arange(48) >= 32
    right = []
    for seed in range(4):
        model_dir = build_tiny_vit(tmp_path / f"vit{seed}", image_size=32, patch_size=8, hidden_size=64, num_layers=2,
                                   seed=seed)
        x = VisionFeatureExtractor(str(model_dir)).extract(paths).mean(1)
        centroids = np.stack([x[train & (labels == c)].mean(0) for c in range(4)])
        pred = np.argmin(((x[test][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        right.append(int((pred == labels[test]).sum()))
    assert min(right) >= 12 and sum(right) >= 58, right
