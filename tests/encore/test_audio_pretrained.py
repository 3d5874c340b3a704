"""MuQ, MuQ-MuLan and CLAP on tiny random-weight models saved to a folder and loaded through get_encoder, the
production path: shapes, determinism, windowing, pooling, tokenization, key conversion, missing-file errors,
and the ONNX fp32 / int8 exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encore.audio import CodebookMismatch, Codebooks, EncoderUnavailable, get_encoder
from encore.audio.onnx_export import export_encoder
from encore.audio.pretrained import PretrainedEncoder, load_torch_module
from encore.audio.random_weights import write_random_weights
from encore.audio.resample import split_windows
from encore.audio.weights import SOURCE_FILE, open_folder

ENCODERS = ("muq", "muq-mulan", "clap")
SHAPES = {"muq": (3, 32), "muq-mulan": (1, 8), "clap": (1, 8)}  # the tiny configs of random_weights
RATES = {"muq": 24_000, "muq-mulan": 24_000, "clap": 48_000}


def _track(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 * 2 ** rng.integers(0, 4)
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    return (x + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    for name in ENCODERS:
        write_random_weights(root, name, size="tiny", seed=0)
    return root


@pytest.fixture(scope="module")
def encoders(weights: Path) -> dict[str, PretrainedEncoder]:
    return {name: get_encoder(name, weights, runtime="torch") for name in ENCODERS}


@pytest.mark.parametrize("name", ENCODERS)
def test_shapes_description_and_determinism(encoders: dict[str, PretrainedEncoder], name: str) -> None:
    encoder = encoders[name]
    info = encoder.describe()
    assert (info["backend"], info["sample_rate"], info["window_seconds"]) == (name, RATES[name], 10.0)
    assert (info["n_layers"], info["dim"]) == SHAPES[name] and info["revision"].startswith("sha256.")
    assert info["params"]["precision"] == "fp32" and encoder.runtime == "torch"
    x = _track(23.0, RATES[name])
    first, second = encoder.encode(x), encoder.encode(x)
    assert first.shape == (np.prod(SHAPES[name]),) and first.dtype == np.float32 and np.isfinite(first).all()
    assert encoder.layer_widths == (SHAPES[name][1],) * SHAPES[name][0]  # equal widths, flat row-major
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, encoder.encode(_track(23.0, RATES[name], seed=5)))  # the input matters
    if name != "muq":  # joint-embedding models: unit vectors
        np.testing.assert_allclose(np.linalg.norm(first.reshape(SHAPES[name]), axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ENCODERS)
def test_output_is_the_mean_over_10s_windows_with_a_repeat_filled_tail(
    encoders: dict[str, PretrainedEncoder], name: str
) -> None:
    encoder, rate = encoders[name], RATES[name]
    x = _track(26.0, rate, seed=1)
    windows = split_windows(x, rate, 10.0, fill="repeat")
    assert len(windows) == 3 and list(windows.lengths) == [10 * rate, 10 * rate, 6 * rate]
    np.testing.assert_array_equal(windows.frames[2, 6 * rate :], x[: 4 * rate])  # tail = the track's start
    per_window = np.stack([encoder.tower(encoder.front_end(w[None]))[0] for w in windows.frames])
    expected = per_window.mean(axis=0)
    if encoder.renormalize:
        expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(x), expected.reshape(-1), rtol=1e-4, atol=1e-5)
    # A tail under half a window is dropped; a clip under one window is repeated to fill it.
    np.testing.assert_allclose(encoder.encode(x[: 13 * rate]), encoder.encode(x[: 10 * rate]), atol=1e-6)
    short = x[: 4 * rate]
    np.testing.assert_allclose(encoder.encode(short), encoder.encode(np.resize(short, 10 * rate)), atol=1e-6)


def test_muq_pools_conformer_layers_1_to_n_over_time(weights: Path) -> None:
    import torch

    module = load_torch_module(open_folder(weights, "muq"))
    mel = torch.randn(2, 128, 1000)
    with torch.inference_mode():
        states = module.hidden_states(mel)
        pooled = module(mel)
    assert len(states) == 4 and all(s.shape == (2, 250, 32) for s in states)  # conv front end + 3 layers, 25 fps
    torch.testing.assert_close(pooled, torch.stack([s.mean(dim=1) for s in states[1:]], dim=1))
    last = states[-1]  # after the final LayerNorm (weight 1, bias 0 at init): zero mean, unit variance per frame
    torch.testing.assert_close(last.mean(-1), torch.zeros(2, 250), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ENCODERS)
def test_published_checkpoint_key_names_load_to_the_same_network(
    encoders: dict[str, PretrainedEncoder], tmp_path: Path, name: str
) -> None:
    """The same random weights saved under the published names (plus parts we drop: CLS token, text tower)."""
    write_random_weights(tmp_path, name, size="tiny", seed=0, published_names=True)
    published = get_encoder(name, tmp_path, runtime="torch")
    x = _track(12.0, RATES[name], seed=2)
    np.testing.assert_allclose(published.encode(x), encoders[name].encode(x), rtol=1e-5, atol=1e-6)


def test_codebooks_tokenize_per_layer_and_refuse_another_encoder(encoders: dict[str, PretrainedEncoder]) -> None:
    muq = encoders["muq"]
    layers = np.stack([muq.encode(_track(10.0, 24_000, seed=s)) for s in range(6)])  # (6, 3, 32)
    books = Codebooks.fit(layers, encoder_info=muq.describe(), k=2, seed=0)
    tokens = books.tokenize(layers)
    assert tokens.shape == (6, 3) and tokens.min() >= 0 and tokens.max() < 2  # one token per pooled layer
    assert books.embedding(layers, layer="last").shape == (6, 32)
    books.check_encoder(muq.describe())
    with pytest.raises(CodebookMismatch, match="backend"):
        books.check_encoder(encoders["clap"].describe())
    with pytest.raises(CodebookMismatch, match="params"):  # int8 vectors never meet fp32 codebooks
        books.check_encoder({**muq.describe(), "params": {**muq.params(), "precision": "int8"}})


def test_missing_or_mismatched_weights_name_what_is_wrong(weights: Path, tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailable, match=r"muq.*lacks config.json, model.safetensors"):
        get_encoder("muq", tmp_path)
    with pytest.raises(EncoderUnavailable, match="no weights_dir was given"):
        get_encoder("clap", None)
    mulan = tmp_path / "muq-mulan"
    mulan.mkdir()
    for name in ("config.json", "model.safetensors"):
        (mulan / name).write_bytes((weights / "muq-mulan" / name).read_bytes())
    with pytest.raises(EncoderUnavailable, match="lacks muq_config.json"):
        get_encoder("muq-mulan", tmp_path)
    with pytest.raises(EncoderUnavailable, match=r"no ONNX export at .*model.int8.onnx.*export_audio_encoder"):
        get_encoder("muq", weights, runtime="onnx-int8")
    with pytest.raises(EncoderUnavailable, match="unknown encoder runtime 'tensorrt'"):
        get_encoder("muq", weights, runtime="tensorrt")
    wrong = tmp_path / "wrong"
    write_random_weights(wrong, "muq", size="tiny")
    config = json.loads((wrong / "muq" / "config.json").read_text())
    (wrong / "muq" / "config.json").write_text(json.dumps({**config, "encoder_depth": 4}))
    with pytest.raises(EncoderUnavailable, match=r"does not fit .*config.json.*missing \['conformer.layers.3"):
        get_encoder("muq", wrong, runtime="torch")
    (wrong / "muq" / "model.safetensors").write_bytes(b"\x00" * 64)  # a cut download
    with pytest.raises(EncoderUnavailable, match="could not be loaded from .* on torch"):
        get_encoder("muq", wrong, runtime="torch")


def test_revision_comes_from_encore_json_when_present(tmp_path: Path) -> None:
    write_random_weights(tmp_path, "clap", size="tiny")
    digest = get_encoder("clap", tmp_path, runtime="torch").revision
    (tmp_path / "clap" / SOURCE_FILE).write_text(json.dumps({"source": "laion/clap-htsat-unfused", "revision": "abc"}))
    assert digest.startswith("sha256.") and get_encoder("clap", tmp_path, runtime="torch").revision == "abc"


@pytest.mark.parametrize("name", ENCODERS)
def test_onnx_exports_match_torch_and_stale_exports_are_refused(
    encoders: dict[str, PretrainedEncoder], tmp_path: Path, name: str
) -> None:
    write_random_weights(tmp_path, name, size="tiny", seed=0)
    record = export_encoder(name, tmp_path, int8=True)
    assert set(record["files"]) == {"model.fp32.onnx", "model.int8.onnx"}
    x = _track(21.0, RATES[name], seed=3)
    reference = encoders[name].encode(x)
    fp32 = get_encoder(name, tmp_path, runtime="onnx")
    int8 = get_encoder(name, tmp_path, runtime="onnx-int8")
    assert fp32.runtime == "onnx" and get_encoder(name, tmp_path).runtime == "onnx"  # auto prefers the export
    assert fp32.describe() == encoders[name].describe() | {"revision": fp32.revision}
    assert int8.params()["precision"] == "int8"
    np.testing.assert_allclose(fp32.encode(x), reference, rtol=1e-4, atol=1e-4)
    # The tiny random nets' 8-wide outputs quantize worse than trained ones: cosine 0.90 (MuQ-MuLan) and 0.97
    # (MuQ) with a fresh install of 2026-12 (onnxruntime 1.31 and 1.32 alike), where trained MusiCNN keeps
    # 0.9999 (docs/encoders.md). A broken int8 export lands near 0.
    assert _cosine(int8.encode(x), reference) > 0.85
    # New weights in the folder: the old export no longer describes them.
    (tmp_path / name / SOURCE_FILE).write_text(json.dumps({"revision": "retrained"}))
    with pytest.raises(EncoderUnavailable, match="exported from weights revision"):
        get_encoder(name, tmp_path, runtime="onnx")
    assert get_encoder(name, tmp_path).runtime == "torch"  # auto falls back instead of using a stale file


def test_conformer_matches_transformers_wav2vec2_conformer_encoder(weights: Path) -> None:
    """Our layer loop (which keeps every hidden state) gives transformers' encoder output on the same weights;
    the published checkpoint's extra conv position embedding is the only weight we do not load."""
    import torch
    from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import Wav2Vec2ConformerEncoder

    module = load_torch_module(open_folder(weights, "muq"))
    reference = Wav2Vec2ConformerEncoder(module.config.conformer_config()).eval()
    result = reference.load_state_dict(module.conformer.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("pos_conv_embed.") for k in result.missing_keys)
    x = torch.randn(2, 250, 32)
    with torch.inference_mode():
        torch.testing.assert_close(module.conformer(x)[-1], reference(x).last_hidden_state, atol=1e-5, rtol=1e-5)


def test_the_onnx_runtime_needs_neither_torch_nor_transformers(tmp_path: Path) -> None:
    """What a serving image without the training extra runs: numpy front end + ONNX Runtime session."""
    import subprocess
    import sys

    write_random_weights(tmp_path, "clap", size="tiny")
    export_encoder("clap", tmp_path, int8=False)
    script = (
        "import sys, numpy as np\n"
        "from encore.audio import get_encoder\n"
        f"encoder = get_encoder('clap', {str(tmp_path)!r})\n"
        "out = encoder.encode(np.sin(np.arange(480000) / 7).astype(np.float32))\n"
        "assert encoder.runtime == 'onnx' and out.shape == (8,), (encoder.runtime, out.shape)\n"
        "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
