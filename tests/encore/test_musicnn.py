"""MusiCNN with its real weights: parity of torch and ONNX with the original TF graph (tests/fixtures, made by
benchmarks/musicnn_reference.py), the float32 mel front end, patching and pooling, the encoder contract, tags
on real clips, and refusals. Needs weights/musicnn-{msd,mtt} (the weights command); never falls back to MFCC."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encore.audio import EncoderUnavailable, decode_audio, extract_catalog, get_encoder, load_catalog, stages
from encore.audio.encoder import format_tags, parse_tags
from encore.audio.extract import load_catalog_tags
from encore.audio.musicnn_encoder import (
    HEADS,
    MAX_PATCHES,
    PATCH_FRAMES,
    TAG_SYNONYMS,
    MusicnnAnalysis,
    MusicnnEncoder,
    MusicnnFrontEnd,
    open_folders,
    split_patches,
    spread_patches,
    top_tags,
)
from encore.audio.onnx_export import export_encoder
from encore.settings import EncoreSettings

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "musicnn_reference.npz"
LAYERS = {"front_end": (0, 561), "mid_end_1": (561, 625), "mid_end_2": (625, 689), "mid_end_3": (689, 753)}
WEIGHTS_COMMAND = "python -m encore.audio.musicnn_weights --out weights (make install runs it)"


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real weights with fresh ONNX exports (the repo's weights/ is never written by tests)."""
    source = ROOT / "weights"
    missing = [name for name in HEADS.values() if not (source / name / "model.safetensors").is_file()]
    if missing:
        pytest.fail(f"MusiCNN weights missing: {', '.join(str(source / m) for m in missing)}; run {WEIGHTS_COMMAND}")
    root = tmp_path_factory.mktemp("weights")
    for name in HEADS.values():
        shutil.copytree(source / name, root / name, ignore=shutil.ignore_patterns("onnx"))
    export_encoder("musicnn", root, int8=True)
    return root


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def encoders(weights_dir: Path) -> dict[str, MusicnnEncoder]:
    return {rt: get_encoder("musicnn", weights_dir, runtime=rt, threads=1) for rt in ("torch", "onnx", "onnx-int8")}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (N, D) arrays."""
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def _close(got: np.ndarray, want: np.ndarray, what: str, atol: float = 1e-4, min_cos: float = 0.9999) -> None:
    assert np.abs(got - want).max() <= atol, f"{what}: max abs diff {np.abs(got - want).max():.2e}"
    assert _cosines(got, want).min() >= min_cos, f"{what}: cosine {_cosines(got, want).min():.6f}"


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("head", ["msd", "mtt"])
def test_every_layer_matches_the_tf_reference(encoders, reference, runtime: str, head: str) -> None:
    patches = reference["logmel"].reshape(-1, PATCH_FRAMES, 96)  # from the stored input: librosa drift excluded
    out = encoders[runtime].run(patches, head)
    for name in ("tags", "penultimate"):
        _close(out[name], reference[f"{name}_{head}"].reshape(out[name].shape), f"{runtime}/{head}/{name}")
    want = reference[f"pooled_{head}"].reshape(out["pooled"].shape)
    for layer, (lo, hi) in LAYERS.items():
        _close(out["pooled"][:, lo:hi], want[:, lo:hi], f"{runtime}/{head}/{layer}")


def test_int8_stays_close_to_the_reference(encoders, reference) -> None:
    patches = reference["logmel"].reshape(-1, PATCH_FRAMES, 96)
    out = encoders["onnx-int8"].run(patches, "msd")
    want = reference["penultimate_msd"].reshape(out["penultimate"].shape)
    assert _cosines(out["penultimate"], want).min() >= 0.999  # only the dense layers are quantized


def test_front_end_matches_the_reference_log_mel(reference) -> None:
    front_end = MusicnnFrontEnd()
    for audio, logmel in zip(reference["audio"], reference["logmel"][:, 0], strict=True):
        ours = front_end(audio)[:PATCH_FRAMES]  # the first patch: frames whose samples the fixture holds
        assert ours.dtype == np.float32 and np.abs(ours - logmel).max() < 1e-4


def test_mel_filterbank_is_librosas() -> None:
    librosa = pytest.importorskip("librosa")
    want = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=96)
    np.testing.assert_allclose(MusicnnFrontEnd().filters.T, want, atol=1e-7)


def test_loud_audio_stays_finite_where_float16_overflows(encoders) -> None:
    t = np.arange(5 * 16_000) / 16_000
    square = np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # full scale, clipped
    front_end = MusicnnFrontEnd()
    with np.errstate(over="ignore"):  # musicnn's extractor: 10000 * mel in float16 overflows above 6.55
        assert np.isinf(np.log10(10000 * front_end.power_mel(square).astype(np.float16) + 1)).any()
    analysis = encoders["onnx"].analyze(square)
    assert np.isfinite(front_end(square)).all() and all(np.isfinite(v).all() for v in analysis.layers)
    assert all(np.isfinite(tags).all() for tags in analysis.tags.values())


def test_patches_are_back_to_back_with_a_repeat_filled_tail() -> None:
    mel = np.arange(2 * PATCH_FRAMES + 100, dtype=np.float32)[:, None] * np.ones(96, np.float32)
    patches = split_patches(mel)
    assert patches.shape == (3, PATCH_FRAMES, 96)  # 100 leftover frames >= half a patch: kept
    np.testing.assert_array_equal(patches[1, :, 0], np.arange(PATCH_FRAMES, 2 * PATCH_FRAMES))
    np.testing.assert_array_equal(patches[2, :100, 0], np.arange(2 * PATCH_FRAMES, 2 * PATCH_FRAMES + 100))
    np.testing.assert_array_equal(patches[2, 100:, 0], np.arange(PATCH_FRAMES - 100))  # the track's start
    assert len(split_patches(mel[: 2 * PATCH_FRAMES + 50])) == 2  # a short leftover is dropped
    short = split_patches(mel[:50])
    assert short.shape[0] == 1 and np.array_equal(short[0, :, 0], np.arange(PATCH_FRAMES) % 50)


def test_a_long_track_is_heard_through_max_patches_spread_from_its_start_to_its_end() -> None:
    patches = np.arange(60, dtype=np.float32)[:, None, None] * np.ones((1, 4, 2), np.float32)
    excerpt = spread_patches(patches)
    assert len(excerpt) == MAX_PATCHES
    firsts = excerpt[:, 0, 0].astype(int).tolist()
    assert firsts[0] == 0 and firsts[-1] == 59 and firsts == sorted(set(firsts))  # ends kept, no repeats
    assert max(np.diff(firsts)) - min(np.diff(firsts)) <= 1  # evenly spaced
    np.testing.assert_array_equal(spread_patches(patches[:MAX_PATCHES]), patches[:MAX_PATCHES])  # short: all


def _music(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    tone = sum(np.sin(2 * np.pi * 110 * 2 ** rng.uniform(0, 2) * h * t) / h for h in range(1, 5))
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * rng.uniform(1.5, 3) * t) > 0)
    return (0.2 * tone * beat + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_encoder_contract_layers_and_pooling(encoders) -> None:
    encoder = encoders["onnx"]
    x = _music(10.0, seed=1)
    info = encoder.describe()
    assert (info["backend"], info["sample_rate"], info["n_layers"], info["dim"]) == ("musicnn", 16_000, 5, 200)
    assert info["layer_widths"] == [561, 64, 64, 64, 200]
    assert info["revision"].startswith("musicnn-0.1.0.MSD_musicnn.") and info["params"]["precision"] == "fp32"
    assert [layer["dim"] for layer in info["layers"]] == [561, 64, 64, 64, 200]
    per_patch = encoder.run(encoder.patches(x))  # 10 s: three full patches and a 0.36-patch tail (dropped)
    assert len(per_patch["penultimate"]) == 3
    vector = encoder.encode(x)  # every pooled layer, flat: front end, mid end 1-3, then the penultimate
    assert vector.shape == (953,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector[-200:], per_patch["penultimate"].mean(axis=0), rtol=1e-6)
    layers = encoder.encode_layers(x)
    assert [v.shape for v in layers] == [(561,), (64,), (64,), (64,), (200,)]
    np.testing.assert_allclose(np.concatenate(layers[:4]), per_patch["pooled"].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate(layers), vector)
    np.testing.assert_array_equal(encoder.encode(x), vector)  # deterministic
    assert _cosines(encoder.encode(_music(10.0, seed=2)), vector) < 0.9999  # the input matters
    _close(encoders["torch"].encode(x), vector, "torch vs onnx track vector")


def test_auto_takes_a_current_onnx_export_and_missing_weights_are_refused(weights_dir: Path, tmp_path: Path) -> None:
    assert get_encoder("musicnn", weights_dir).runtime == "onnx"
    with pytest.raises(EncoderUnavailable, match="musicnn_weights"):
        get_encoder("musicnn", tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(weights_dir / "musicnn-msd", partial / "musicnn-msd", ignore=shutil.ignore_patterns("onnx"))
    shutil.copytree(weights_dir / "musicnn-mtt", partial / "musicnn-mtt", ignore=shutil.ignore_patterns("onnx"))
    assert get_encoder("musicnn", partial).runtime == "torch"  # no export: auto computes the same on torch
    with pytest.raises(EncoderUnavailable, match="export_audio_encoder --encoder musicnn-msd"):
        get_encoder("musicnn", partial, runtime="onnx")
    (partial / "musicnn-mtt" / "model.safetensors").unlink()
    with pytest.raises(EncoderUnavailable, match="musicnn-mtt lacks model.safetensors"):
        get_encoder("musicnn", partial, runtime="torch")


def test_onnx_runtime_serves_without_torch(weights_dir: Path) -> None:
    """The embedder's path: get_encoder on runtime onnx imports neither torch nor TensorFlow."""
    script = (
        "import sys, numpy as np; from encore.audio import get_encoder; "
        f"e = get_encoder('musicnn', {str(weights_dir)!r}, runtime='onnx'); "
        "a = e.analyze(0.1 * np.random.default_rng(0).standard_normal(64_000).astype(np.float32)); "
        "assert len(a.top_tags('mtt')) == 5; print(sorted({'torch', 'tensorflow'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_catalog_extraction_stores_every_layer(encoders, tmp_path: Path) -> None:
    items = {}
    for i in range(2):
        items[f"t{i}"] = tmp_path / f"t{i}.wav"
        sf.write(items[f"t{i}"], _music(4.0, seed=i), 16_000)
    extract_catalog(items, encoders["onnx"], tmp_path / "out", progress=False)
    ids, layers, manifest = load_catalog(tmp_path / "out")
    assert ids == ["t0", "t1"] and layers.shape == (2, 953)
    assert manifest["encoder"]["layer_widths"] == [561, 64, 64, 64, 200]
    assert manifest["encoder"]["backend"] == "musicnn" and manifest["runtime"] == "onnx"
    decoded = decode_audio(items["t1"].read_bytes(), max_seconds=None)
    np.testing.assert_allclose(layers[1], encoders["onnx"].encode_decoded(decoded), rtol=1e-6)
    assert load_catalog_tags(tmp_path / "out") == {}  # not asked for

    # With tags (the bootstrap's catalog): the same vectors, and each track's top tags in the store's form.
    extract_catalog(items, encoders["onnx"], tmp_path / "tagged", progress=False, tags=True)
    _, tagged_layers, _ = load_catalog(tmp_path / "tagged")
    np.testing.assert_allclose(tagged_layers, layers, rtol=1e-6)
    tags = load_catalog_tags(tmp_path / "tagged")
    _, want = encoders["onnx"].encode_with_tags(decoded)
    assert set(tags) == {"t0", "t1"} and tags["t1"] == format_tags(want)
    assert set(parse_tags(tags["t0"])) == {"msd", "mtt"}
    # A resumed run reuses vectors and tags; a vector whose tags file is gone is encoded again.
    work = next((tmp_path / "tagged" / "work").iterdir())
    next(work.glob("*.tags.json")).unlink()
    extract_catalog(items, encoders["onnx"], tmp_path / "tagged", progress=False, tags=True)
    assert load_catalog_tags(tmp_path / "tagged") == tags


def test_top_tags_of_both_heads(encoders) -> None:
    analysis = encoders["onnx"].analyze(_music(7.0, seed=3))
    tags = top_tags(analysis)
    assert set(tags) == {"msd", "mtt"} and all(len(v) == 5 for v in tags.values())
    for head, top in tags.items():
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and probs[0] == pytest.approx(analysis.tags[head].max())
        assert {t for t, _ in top} <= set(analysis.tag_names[head]) and len(analysis.tag_names[head]) == 50


def test_top_tags_name_each_synonym_group_once(weights_dir: Path) -> None:
    """A listener learns nothing from "no vocal" after "no vocals": a group counts once, under its first name, at its
    most probable member's probability, and the k tags are k different things."""
    names = {head: list(folder.config["tags"]) for head, folder in open_folders(weights_dir).items()}
    for group in TAG_SYNONYMS:  # every name is a tag of one head (a typo would merge nothing)
        assert any(set(group) <= set(tag_names) for tag_names in names.values()), group
    mtt = names["mtt"]
    probs = np.linspace(0.01, 0.02, len(mtt), dtype=np.float32)  # everything else below the planted tags
    planted = {"no vocal": 0.9, "no vocals": 0.8, "no voice": 0.7, "woman": 0.6, "piano": 0.5, "female": 0.45}
    for name, p in planted.items():
        probs[mtt.index(name)] = p
    analysis = MusicnnAnalysis(layers=[], layer_names=[], tags={"mtt": probs}, tag_names={"mtt": mtt}, n_patches=1)
    top = analysis.top_tags("mtt", 4)
    assert [t for t, _ in top[:3]] == ["no vocals", "female voice", "piano"]
    assert [p for _, p in top[:3]] == pytest.approx([0.9, 0.6, 0.5])
    assert len(top) == 4 and len({t for t, _ in top}) == 4 and top[3][0] not in planted


def test_an_encode_reports_its_stages_to_the_thread_that_asks(encoders) -> None:
    """The embedder's encode_resample / encode_mel / encode_network metrics come from these stages."""
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([_music(6.0, seed=5)] * 2, axis=1), 16_000, format="WAV")
    decoded = decode_audio(buffer.getvalue(), max_seconds=None)
    encoder = encoders["onnx"]
    elsewhere: list[dict[str, float]] = []
    with stages.collect() as parts:
        layers, _ = encoder.encode_with_tags(decoded)
        worker = threading.Thread(target=lambda: elsewhere.append(encoder.encode_with_tags(decoded)[0]))
        worker.start()
        worker.join()
    assert set(parts) == {"resample", "mel", "network"} and all(ms > 0 for ms in parts.values())
    assert len(elsewhere) == 1 and np.array_equal(elsewhere[0], layers)  # the other thread's encode: not counted
    with stages.collect() as alone:
        encoder.encode_with_tags(decoded)
    assert set(alone) == set(parts)
    encoder.encode_with_tags(decoded)  # outside collect(): nothing is timed, nothing breaks


# MTT tags a listener would accept for each real clip (issue 19): at least one in the top 5.
PLAUSIBLE = {
    "librosa_brahms_hungarian5.ogg": {"classical", "strings"},
    "librosa_pistachio_ragtime.ogg": {"piano"},
    "librosa_choice_drumbass.ogg": {"drums", "beat"},
}


@pytest.fixture(scope="module")
def audio_dir() -> Path:
    """The real clips: ENCORE_DATASETS_DIR/audio (default shared/data beside the checkout), or shared/data beside
    its worktree folder."""
    roots = [EncoreSettings().datasets_dir, ROOT.parent.parent / "shared" / "data"]
    for root in roots:
        if all((root / "audio" / clip).is_file() for clip in PLAUSIBLE):
            return root / "audio"
    pytest.skip(f"real audio clips not found under {' or '.join(map(str, roots))} (set ENCORE_DATASETS_DIR)")


@pytest.mark.parametrize("clip", sorted(PLAUSIBLE))
def test_mtt_tags_are_plausible_on_real_clips(encoders, audio_dir: Path, clip: str) -> None:
    decoded = decode_audio((audio_dir / clip).read_bytes(), max_seconds=None)
    top = [tag for tag, _ in encoders["onnx"].analyze_decoded(decoded).top_tags("mtt")]
    assert PLAUSIBLE[clip] & set(top), f"{clip}: MTT top 5 {top}"
