"""Reference outputs of the original MusiCNN TF graph for the parity tests (run once; the npz is committed).

Not part of Encore and never imported by it: it runs in a throwaway venv with TensorFlow, which Encore does
not depend on, and the musicnn wheel unpacked (never installed: it pins numpy<1.17) onto sys.path:

    python3.11 -m venv /tmp/tfref && /tmp/tfref/bin/pip install tensorflow tf_keras librosa
    python -m encore.audio.musicnn_weights --out weights        # caches the wheel in .cache/wheels/
    TF_USE_LEGACY_KERAS=1 /tmp/tfref/bin/python benchmarks/musicnn_reference.py \
        --wheel .cache/wheels/musicnn-0.1.0-py3-none-any.whl --audio /work/shared/data/audio \
        --out tests/fixtures/musicnn_reference.npz

For each clip: the first 10 s loaded as musicnn's extractor does (librosa.load at 16 kHz), the log-mel of
musicnn's batch_data (librosa.feature.melspectrogram, n_fft 512, hop 256, 96 bands, then
log10(10000 * mel + 1)) but kept in float32 (musicnn casts the mel to float16 first, which overflows on loud
audio) and with reflect padding (librosa's default when the models were trained; 0.10 changed it to zeros),
cut into back-to-back 187-frame patches. The graph is musicnn.models.build_musicnn restored from the wheel's
MSD_musicnn and MTT_musicnn checkpoints with tf.compat.v1.train.Saver, exactly as musicnn.extractor does.

Stored per clip (C clips, P patches): `logmel` (C, P, 187, 96), the graph input; `audio` (C, 48000) the
first 3 s at 16 kHz, to check Encore's mel front end; and per checkpoint (msd, mtt) `tags_*` (C, P, 50)
sigmoid outputs, `penultimate_*` (C, P, 200) and `pooled_*` (C, P, 753) = the graph's mean_pool: the time mean
of the front end (561) and the three mid-end layers (64 each). `info` is a JSON string of versions and settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CLIPS = ("librosa_brahms_hungarian5.ogg", "librosa_pistachio_ragtime.ogg", "librosa_choice_drumbass.ogg")
SR, N_FFT, HOP, N_MELS, PATCH = 16_000, 512, 256, 96, 187


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheel", type=Path, required=True, help="musicnn-0.1.0-py3-none-any.whl")
    p.add_argument("--audio", type=Path, required=True, help="folder holding the clips")
    p.add_argument("--out", type=Path, required=True, help="npz to write")
    p.add_argument("--seconds", type=float, default=10.0, help="length loaded from each clip")
    return p.parse_args()


def log_mel(y: np.ndarray) -> np.ndarray:
    """(T, 96) float32: musicnn's batch_data without its float16 cast."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS, pad_mode="reflect")
    return np.log10(10000 * mel.T.astype(np.float32) + 1).astype(np.float32)


def run_graph(package_dir: Path, checkpoint: str, patches: np.ndarray) -> dict[str, np.ndarray]:
    """tags, penultimate and mean_pool of the published graph for (N, 187, 96) patches."""
    import tensorflow as tf
    from musicnn import models  # the unpacked wheel's own model code

    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, PATCH, N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        logits, *_, mean_pool, _max_pool, penultimate = models.define_model(x, is_training, checkpoint, 50)
        tags = tf.nn.sigmoid(logits)
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, str(package_dir / "musicnn" / checkpoint) + "/")
        out = sess.run([tags, penultimate, mean_pool], feed_dict={x: patches, is_training: False})
    return dict(zip(("tags", "penultimate", "pooled"), (np.asarray(a, np.float32) for a in out), strict=True))


def main() -> int:
    args = parse_args()
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        print("error: set TF_USE_LEGACY_KERAS=1 (musicnn uses tf.compat.v1.layers)", file=sys.stderr)
        return 2
    import librosa
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="musicnn-wheel-") as tmp:
        package_dir = Path(tmp)
        zipfile.ZipFile(args.wheel).extractall(package_dir)
        sys.path.insert(0, str(package_dir))
        audio, mels = [], []
        for name in CLIPS:
            y, _ = librosa.load(args.audio / name, sr=SR, duration=args.seconds)
            mel = log_mel(y)
            n = mel.shape[0] // PATCH  # musicnn's batch_data: full patches only, no overlap
            mels.append(mel[: n * PATCH].reshape(n, PATCH, N_MELS))
            audio.append(y[: 3 * SR].astype(np.float32))
        n_patches = min(len(m) for m in mels)
        logmel = np.stack([m[:n_patches] for m in mels])  # (C, P, 187, 96)
        arrays: dict[str, np.ndarray] = {"logmel": logmel, "audio": np.stack(audio), "clips": np.array(CLIPS)}
        for checkpoint in ("MSD_musicnn", "MTT_musicnn"):
            out = run_graph(package_dir, checkpoint, logmel.reshape(-1, PATCH, N_MELS))
            head = checkpoint[:3].lower()
            for key, value in out.items():
                arrays[f"{key}_{head}"] = value.reshape(len(CLIPS), n_patches, -1)
    info = {
        "tensorflow": tf.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "wheel": args.wheel.name,
        "seconds": args.seconds,
        "mel": {"sr": SR, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "pad_mode": "reflect", "dtype": "float32"},
        "log": "log10(10000 * mel + 1)",
    }
    arrays["info"] = np.array(json.dumps(info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(CLIPS)} clips x {n_patches} patches")
    for key in sorted(arrays):
        print(f"  {key}: {arrays[key].shape} {arrays[key].dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
