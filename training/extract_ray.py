"""Catalog embedding on Ray Data (`python -m training.extract_audio --engine ray [--address HOST:PORT]`).

The pipeline: list the tracks not yet finished (the single-process path's work dir: one .npy per track
under out/work/<encoder fingerprint>/) -> read and decode each file in Ray tasks (to the encoder's mono
input) -> encode in an actor pool, each actor holding one ONNX encoder session -> each actor saves the
track's .npy into the work dir (what resuming reads) and the dataset is written as parquet parts under
out/parts/<run>/ (track_id, code, message, layers as a flat float32 list). Then `extract_catalog` assembles
content.npz and manifest.json exactly as the single-process path does, finding every encoded track in the
work dir; a killed run resumes from the same files. Ray starts locally without `--address`; with it the
driver joins that cluster, whose workers must see `out` and the audio files at the same paths (a shared
volume, deploy/k8s/components/ray).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encore.audio.decode import AudioError, decode_audio
from encore.audio.extract import _load_done, _save_npy_atomic, encoder_fingerprint, extract_catalog
from encore.errors import EncoreError


@dataclass(frozen=True)
class EncoderRecipe:
    """How an actor builds its own encoder (encoders are not shipped between processes)."""

    name: str
    weights_dir: Path | None
    runtime: str
    threads: int

    def build(self) -> Any:
        from encore.audio import get_encoder

        return get_encoder(self.name, self.weights_dir, runtime=self.runtime, threads=self.threads)


def done_path(work_dir: Path, track_id: str) -> Path:
    """The single-process path's per-track file (encore/audio/extract.py): one resume state for both engines."""
    return work_dir / f"{hashlib.sha256(track_id.encode()).hexdigest()[:32]}.npy"


def decode_row(row: dict[str, Any], sample_rate: int, max_seconds: float | None) -> dict[str, Any]:
    """Read and decode one file to the encoder's mono input; a bad file becomes a row with its error code."""
    from encore.audio.resample import to_encoder_input

    empty = np.zeros(0, np.float32)
    try:
        decoded = decode_audio(Path(row["path"]).read_bytes(), max_seconds=max_seconds)
    except AudioError as exc:
        return {"track_id": row["track_id"], "wave": empty, "code": exc.code, "message": exc.message}
    except OSError as exc:
        return {"track_id": row["track_id"], "wave": empty, "code": "unreadable", "message": str(exc)}
    wave = to_encoder_input(decoded.samples, decoded.sample_rate, sample_rate)
    return {"track_id": row["track_id"], "wave": wave.astype(np.float32), "code": "", "message": ""}


class EncodeActor:
    """One per pool slot: holds an encoder session for its lifetime and encodes the batches it is given."""

    def __init__(self, recipe: EncoderRecipe, work_dir: str) -> None:
        self.encoder = recipe.build()
        self.work_dir = Path(work_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        layers = []
        for track_id, wave, code in zip(batch["track_id"], batch["wave"], batch["code"], strict=True):
            if code:
                layers.append(np.zeros(0, np.float32))
                continue
            vector = self.encoder.encode(np.asarray(wave, dtype=np.float32))
            _save_npy_atomic(done_path(self.work_dir, str(track_id)), vector)
            layers.append(vector.reshape(-1))
        return {
            "track_id": np.asarray(batch["track_id"], dtype=object),
            "code": np.asarray(batch["code"], dtype=object),
            "message": np.asarray(batch["message"], dtype=object),
            "layers": np.array(layers + [None], dtype=object)[:-1],  # ragged: failures hold no vector
        }


def extract_catalog_ray(
    items: dict[str, Path],
    recipe: EncoderRecipe,
    out_dir: Path,
    *,
    address: str | None = None,
    actors: int = 2,
    batch_size: int = 8,
    resume: bool = True,
    max_seconds: float | None = None,
    progress: bool = True,
) -> Path:
    """Encode every track in `items` on Ray; returns content.npz (the same file the single-process path writes)."""
    import ray

    encoder = recipe.build()  # the driver's copy: fingerprint, shapes, and the final assembly
    out_dir = Path(out_dir)
    work_dir = out_dir / "work" / encoder_fingerprint(encoder.describe(), max_seconds)
    if not resume and work_dir.exists():
        import shutil

        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    shape = (encoder.n_layers, encoder.dim)
    todo = [
        {"track_id": t, "path": str(Path(p).resolve())}
        for t, p in items.items()
        if _load_done(done_path(work_dir, t), shape) is None
    ]
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            init: dict[str, Any] = {"address": address} if address else {"num_cpus": max(actors, 1)}
            ray.init(**init, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            _run_pipeline(ray, todo, recipe, encoder.sample_rate, work_dir, out_dir, actors, batch_size, max_seconds,
                          progress)  # fmt: skip
        finally:
            if started_here:
                ray.shutdown()
    # Every track encoded above is now a finished .npy: the single-process assembly reuses them all (and gives
    # the files that failed to decode one more try, listing them under "skipped").
    return extract_catalog(items, encoder, out_dir, resume=True, max_seconds=max_seconds, progress=False)


def _run_pipeline(ray, todo, recipe, sample_rate, work_dir, out_dir, actors, batch_size, max_seconds, progress):
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    parts = out_dir / "parts" / time.strftime("%Y%m%dT%H%M%S")
    blocks = min(len(todo), max(actors, -(-len(todo) // batch_size)), 1024)  # at least one block per actor
    dataset = ray.data.from_items(todo, override_num_blocks=blocks)
    dataset = dataset.map(decode_row, fn_kwargs={"sample_rate": sample_rate, "max_seconds": max_seconds})
    dataset = dataset.map_batches(
        EncodeActor,
        fn_constructor_args=(recipe, str(work_dir)),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    try:
        dataset.write_parquet(str(parts))
    except Exception as error:  # a task that failed past Ray's retries: what finished is kept for resuming
        raise EncoreError(f"ray pipeline failed (finished tracks are kept; run again to resume): {error}") from error
