"""Extract audio content for a catalog: one encoder over every track, resumable, with a manifest.

    .venv/bin/python -m training.extract_audio --dataset synthetic [--size default] [--encoder mfcc] [--out DIR]
    .venv/bin/python -m training.extract_audio --audio-dir DIR --out OUT --encoder muq --weights-dir weights

Writes OUT/content.npz (track_ids, layers (N, L, D)) and OUT/manifest.json (encoder, revision, sample rate,
windows, pooling, layers, runtime, counts, checksum). For a dataset OUT defaults to <world>/content/<encoder>/,
where the benchmark's content settings look for it; with --audio-dir every audio file under DIR is a track
whose id is its path relative to DIR without the suffix.

--engine ray runs the same extraction as a Ray Data pipeline (training/extract_ray.py; the `ray` extra):
decode in tasks, encode in a pool of --actors actors each holding one encoder session, parquet parts under
OUT/parts/; same resume files and the same content.npz. --address HOST:PORT joins a running Ray cluster;
without it Ray starts locally.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encore.errors import EncoreError

DATASETS = ("synthetic",)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help=f"dataset with audio: {', '.join(DATASETS)}")
    source.add_argument("--audio-dir", type=Path, help="a folder of audio files (needs --out)")
    p.add_argument("--encoder", default="mfcc", help="audio encoder: mfcc, muq, muq-mulan, clap (default mfcc)")
    p.add_argument("--weights-dir", type=Path, default=Path("weights"), help="local encoder folders (default weights/)")
    p.add_argument(
        "--runtime", default="auto", help="auto (ONNX fp32 when exported, else torch), torch, onnx, onnx-int8"
    )
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <world>/content/<encoder>)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset cache root (default data/, ENCORE_CACHE_DIR)")
    p.add_argument("--size", default="default", help="synthetic world size: quick, small, default, large")
    p.add_argument("--world-seed", type=int, default=None, help="synthetic world seed")
    p.add_argument("--restart", action="store_true", help="discard finished vectors instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    r = p.add_argument_group("engine")
    r.add_argument("--engine", choices=["local", "ray"], default="local", help="local (one process, default) or ray")
    r.add_argument("--address", default=None, help="ray: address of a running cluster (default: start one locally)")
    r.add_argument("--actors", type=int, default=2, help="ray: encoder actors (default 2)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    from encore.audio import extract_catalog, get_encoder

    if args.audio_dir is not None and args.out is None:
        raise EncoreError("--audio-dir needs --out")
    if args.dataset is not None and args.dataset not in DATASETS:
        raise EncoreError(f"no audio catalog for dataset {args.dataset!r}; known: {', '.join(DATASETS)}")
    if args.engine == "local" and (args.address is not None):
        raise EncoreError("--address needs --engine ray")
    if args.actors < 1:
        raise EncoreError("--actors must be >= 1")
    # Fails on an unknown or uninstalled encoder before any world is built or file listed.
    encoder = get_encoder(args.encoder, args.weights_dir, runtime=args.runtime, threads=args.threads)
    if args.audio_dir is not None:
        items, out = audio_files(args.audio_dir), args.out
    else:
        from training.datasets.synthetic import content_dir, default_root, load_world, world_params

        progress = not args.no_progress
        world = load_world(world_params(args.size, args.world_seed), args.data_root or default_root(), progress)
        items, out = world.audio_paths(), args.out or content_dir(world, args.encoder)
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise EncoreError("--engine ray needs the ray extra: pip install -e '.[ray]'") from None
        from training.extract_ray import EncoderRecipe, extract_catalog_ray

        recipe = EncoderRecipe(args.encoder, args.weights_dir, args.runtime, args.threads or 1)
        extract_catalog_ray(items, recipe, out, address=args.address, actors=args.actors,
                            resume=not args.restart, progress=not args.no_progress)  # fmt: skip
        return out
    extract_catalog(items, encoder, out, resume=not args.restart, progress=not args.no_progress)
    return out


def audio_files(folder: Path) -> dict[str, Path]:
    """Track id (path under `folder` without suffix, '/'-separated) -> file, for every audio file, sorted."""
    if not folder.is_dir():
        raise EncoreError(f"--audio-dir {folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise EncoreError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}")
    items = {p.relative_to(folder).with_suffix("").as_posix(): p for p in paths}
    if len(items) < len(paths):
        raise EncoreError(f"two files under {folder} differ only by suffix; their track ids would collide")
    return items


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"content in {out / 'content.npz'} (manifest {out / 'manifest.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
