"""CLAP's text tower as the query encoder: a tiny random whole-ClapModel folder (the published layout) exports to
the query-encoder folder, its ONNX graph gives ClapTextModelWithProjection's normalized text embeddings for
padded batches of any length, QueryEncoder reads the folder unchanged, and the ranker prefers it to MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encore.settings import RankerSettings
from encore.text_query import QUERY_ENCODER_DIR, QueryEncoder, SentenceEncoder, default_query_encoder_dir

TEXTS = ["classical strings", "mellow acoustic guitar with a soft female voice", "rock"]
TAGS = {"mtt": ["classical", "strings", "Guitar", "rock"], "msd": ["rock", "Mellow", "electronic"]}


def export_tiny_clap_text(weights_dir: Path) -> Path:
    """weights_dir/clap (tiny, random) and MusiCNN tag configs -> the exported weights_dir/clap-text."""
    pytest.importorskip("transformers", reason="CLAP's export needs transformers (the training extra)")
    from encore.audio.random_weights import write_random_clap_with_text
    from training.export_text_encoder import main

    write_random_clap_with_text(weights_dir)
    for head, tags in TAGS.items():
        (weights_dir / f"musicnn-{head}").mkdir(parents=True)
        (weights_dir / f"musicnn-{head}" / "config.json").write_text(json.dumps({"tags": tags}))
    assert main(["--from", "clap", "--weights-dir", str(weights_dir)]) == 0
    return weights_dir / "clap-text"


def reference_vectors(clap_dir: Path, texts: list[str]) -> np.ndarray:
    """transformers' ClapTextModelWithProjection on the whole checkpoint's text keys, padded with <pad> as
    the published tokenizer pads, text_embeds L2-normalized (as ClapModel compares them)."""
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import ClapConfig, ClapTextModelWithProjection

    config = ClapConfig(**json.loads((clap_dir / "config.json").read_text()))
    model = ClapTextModelWithProjection(config.text_config).eval()
    state = load_file(str(clap_dir / "model.safetensors"))
    model.load_state_dict({k: v for k, v in state.items() if k.startswith(("text_model.", "text_projection."))})
    tokenizer = Tokenizer.from_file(str(clap_dir / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=1, pad_token="<pad>")
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    with torch.no_grad():
        embeds = model(input_ids=ids, attention_mask=mask).text_embeds
    return torch.nn.functional.normalize(embeds, dim=-1).numpy()


def test_the_clap_text_export_matches_transformers_and_serves_tag_similarities(tmp_path) -> None:
    out = export_tiny_clap_text(tmp_path)
    sentences = SentenceEncoder(out)
    reference = reference_vectors(tmp_path / "clap", TEXTS)
    np.testing.assert_allclose(sentences.encode(TEXTS), reference, atol=1e-5)  # one padded batch
    for text, expected in zip(TEXTS, reference, strict=True):  # and each alone, at its own length
        np.testing.assert_allclose(sentences.encode([text])[0], expected, atol=1e-5)
    encoder = QueryEncoder(out)
    assert encoder.name == "clap" and encoder.tags.vectors.shape == (6, 8)
    similarity = encoder.tag_similarities("classical strings")
    assert set(similarity) == {"classical", "strings", "guitar", "rock", "mellow", "electronic"}
    classical = reference_vectors(tmp_path / "clap", ["classical"])[0]
    assert similarity["classical"] == pytest.approx(float(reference[0] @ classical), abs=1e-5)
    assert json.loads((out / "export.json").read_text())["encoder"] == "clap"


def test_the_ranker_prefers_a_complete_clap_text_export(tmp_path) -> None:
    assert default_query_encoder_dir(tmp_path) == tmp_path / QUERY_ENCODER_DIR  # nothing there: MiniLM's place
    (tmp_path / "clap-text").mkdir()
    (tmp_path / "clap-text" / "model.onnx").write_bytes(b"")  # a half-written export is not chosen
    assert default_query_encoder_dir(tmp_path) == tmp_path / QUERY_ENCODER_DIR
    out = export_tiny_clap_text(tmp_path)
    assert RankerSettings(weights_dir=tmp_path).query_encoder_path == out
    assert RankerSettings(weights_dir=tmp_path, ranker_query_encoder_dir="/x").query_encoder_path == Path("/x")


def test_a_clap_folder_without_its_text_tower_is_refused(tmp_path, capsys) -> None:
    pytest.importorskip("transformers", reason="CLAP's export needs transformers (the training extra)")
    from encore.audio.random_weights import write_random_weights
    from training.export_text_encoder import main

    write_random_weights(tmp_path, "clap")  # audio tower only
    for head, tags in TAGS.items():
        (tmp_path / f"musicnn-{head}").mkdir()
        (tmp_path / f"musicnn-{head}" / "config.json").write_text(json.dumps({"tags": tags}))
    assert main(["--from", "clap", "--weights-dir", str(tmp_path)]) == 2
    assert "text_config" in capsys.readouterr().err
    assert not (tmp_path / "clap-text" / "model.onnx").exists()


def test_a_tokenizer_from_vocab_and_merges_encodes_as_tokenizer_json(tmp_path) -> None:
    from tokenizers import Tokenizer

    from encore.audio.random_weights import random_roberta_tokenizer
    from training.export_text_encoder import clap_tokenizer

    published = random_roberta_tokenizer()
    published.model.save(str(tmp_path))  # vocab.json + merges.txt, as RoBERTa's slow tokenizer ships them
    clap_tokenizer(tmp_path, tmp_path / "converted.json")
    converted = Tokenizer.from_file(str(tmp_path / "converted.json"))
    for text in [*TEXTS, "Hip-Hop, 80s; électronique"]:
        assert converted.encode(text).ids == published.encode(text).ids
