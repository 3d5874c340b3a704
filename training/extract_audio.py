"""Extract audio content for a dataset's catalog: one encoder over every track, resumable, with a manifest.

    .venv/bin/python -m training.extract_audio --dataset synthetic [--size default] [--encoder mfcc] [--out DIR]

Writes DIR/content.npz (track_ids, layers (N, L, D)) and DIR/manifest.json (encoder, counts, checksum);
DIR defaults to <world>/content/<encoder>/, where the benchmark's content settings look for it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encore.errors import EncoreError

DATASETS = ("synthetic",)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help=f"dataset with audio: {', '.join(DATASETS)}")
    p.add_argument("--encoder", default="mfcc", help="audio encoder backend (default mfcc)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default <world>/content/<encoder>)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset cache root (default data/, ENCORE_DATA_DIR)")
    p.add_argument("--size", default="default", help="synthetic world size: quick, small, default, large")
    p.add_argument("--world-seed", type=int, default=None, help="synthetic world seed")
    p.add_argument("--restart", action="store_true", help="discard finished vectors instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> Path:
    if args.dataset not in DATASETS:
        raise EncoreError(f"no audio catalog for dataset {args.dataset!r}; known: {', '.join(DATASETS)}")
    from encore.audio import extract_catalog, get_encoder
    from training.datasets.synthetic import content_dir, default_root, load_world, world_params

    encoder = get_encoder(args.encoder)  # fails on an unknown backend before any world is built
    world = load_world(world_params(args.size, args.world_seed), args.data_root or default_root(), not args.no_progress)
    out = args.out or content_dir(world, args.encoder)
    extract_catalog(world.audio_paths(), encoder, out, resume=not args.restart, progress=not args.no_progress)
    return out


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
