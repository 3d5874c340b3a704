"""Every model entry of the music-dataset configs builds its registered model on that dataset's field names."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore.schema import FeatureSpec, FieldConfig
from training.data import TensorSplit
from training.models.registry import CTR_MODELS, get_ctr_model
from training.trainer import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def music_like_split(n: int = 128):
    """user_id / track_id as the synthetic, hetrec and taste loaders name them, plus content fields."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 30, n),
            "track_id": rng.integers(0, 40, n),
            "genre": rng.choice(["rock", "pop"], n),
            "n_plays": rng.random(n),
            "audio_tok_0": rng.integers(0, 32, n),
            "audio_emb": list(rng.normal(size=(n, 12)).astype(np.float32)),
            "label": rng.integers(0, 2, n),
        }
    )
    fields = [
        FieldConfig("user_id", "id", owner="user"),
        FieldConfig("track_id", "id", owner="item"),
        FieldConfig("genre", "categorical", owner="item"),
        FieldConfig("n_plays", "numeric", owner="user"),
        FieldConfig("audio_tok_0", "categorical", owner="item"),
        FieldConfig("audio_emb", "dense", owner="item", dim=12),
    ]
    spec = FeatureSpec.fit(frame, fields, label="label")
    return spec, next(TensorSplit.from_frame("train", spec, frame).batches(n))[0]


@pytest.mark.parametrize("dataset", ["synthetic", "hetrec-lastfm-2k"])
def test_config_covers_every_model_and_each_entry_builds(dataset):
    config = json.loads((CONFIGS / f"{dataset}.json").read_text())
    assert set(config["models"]) == set(CTR_MODELS), "a registered model has no entry (or an entry no model)"
    spec, inputs = music_like_split()
    for name, entry in config["models"].items():
        model = get_ctr_model(name)(spec, **entry.get("model", {})).eval()
        TrainConfig(**{**config["train"], **entry.get("train", {})})
        assert model(inputs).shape == (128,), name
