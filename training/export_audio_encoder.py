"""Export a pretrained encoder's tower to ONNX (fp32, and dynamic int8 unless --no-int8) next to its weights.

    .venv/bin/python -m training.export_audio_encoder --encoder muq [--weights-dir weights] [--no-int8]

Writes <weights-dir>/<encoder>/onnx/model.fp32.onnx, model.int8.onnx and export.json (the weights revision
it came from); the embedder and training.extract_audio pick it with runtime onnx / onnx-int8 (auto: fp32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encore.errors import EncoreError

ENCODERS = ("muq", "muq-mulan", "clap", "musicnn", "musicnn-msd", "musicnn-mtt")  # musicnn: both checkpoints


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", required=True, choices=ENCODERS)
    p.add_argument("--weights-dir", type=Path, default=Path("weights"), help="local encoder folders (default weights/)")
    p.add_argument("--no-int8", action="store_true", help="skip the dynamic int8 model")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from encore.audio.onnx_export import export_encoder

        record = export_encoder(args.encoder, args.weights_dir, int8=not args.no_int8)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {', '.join(record['files'])} to {args.weights_dir} (weights revision {record['revision']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
