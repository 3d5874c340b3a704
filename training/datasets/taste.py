"""TASTE / RecBole atomic files: run Encore on Music4All, LFM-1b or any data in that layout.

Point `--data-root` at the dataset folder; its name is the file prefix (RecBole's convention):

  <folder>/<name>.inter   tab-separated, `name:type` headers; needs the user, item and play-count columns
                          (default `user_id`, `item_id`, `num_repeat`; `--inter-fields` renames them) and may
                          carry `timestamp:float` (enables `--split temporal`). Other columns are refused.
  <folder>/<name>.user    optional: the user column plus user features
  <folder>/<name>.item    optional: the item column plus item features
  <folder>/content/*      optional: content arrays keyed by item token (see training/datasets/content_files.py)

Feature columns by header type: `token` -> categorical (id+cat), `float` -> quantile-bucketized numeric
(id+cat+num), `token_seq` -> a token list (space-separated, id+cat). `--columns a,b` keeps only the named
feature columns; a name that is in neither file fails with the list of known columns. `float_seq` columns are
refused: vectors belong in a content file. Content: `none`, `dense` (one dense field from the last layer) or
`tokens` (per-layer codebooks fit on training items), from the file chosen by `--content-file NAME` (a file in
content/, needed when there is more than one). Items without content fail unless `--missing-content zeros`.

Tokens are strings; they are numbered in sorted order (user and item ids are integers inside the protocol),
which is indexing, not a statistic: vocabularies, bucket edges and codebooks are still fit on training rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from encore.errors import EncoreError
from encore.io import sha256_file
from encore.schema import FieldConfig
from encore.settings import EncoreSettings
from training.datasets.base import FEATURE_SETTINGS, DatasetSplits, require_file
from training.datasets.content import ContentArrays, MissingPolicy, build_item_content, codebooks_dirname, token_tag
from training.datasets.content_files import CONTENT_SUFFIXES, read_content_file
from training.datasets.dataset import Dataset
from training.datasets.protocol import ITEM, USER, ProtocolConfig, ProtocolSplits, apply_protocol, joined_dataset

NAME = "taste"
CONTENT_SETTINGS = ("none", "dense", "tokens")
OPTIONS = ("protocol", "missing", "k", "token_layers", "progress", "inter_fields", "columns", "content_file")
DEFAULT_INTER_FIELDS = ("user_id", "item_id", "num_repeat")
ATOMIC_TYPES = ("token", "float", "token_seq", "float_seq")
_PROTOCOL_CACHE: dict[tuple, ProtocolSplits] = {}


def cache_root() -> Path:
    return EncoreSettings().cache_dir / NAME


def variant_of(
    protocol: ProtocolConfig | None = None,
    content_file: str | None = None,
    columns: str | None = None,
    k: int = 32,
    token_layers: str = "all",
    **_: object,
) -> str:
    parts = [(protocol or ProtocolConfig()).tag() + token_tag(k, token_layers)]
    if content_file:
        parts.append(f"content={content_file}")
    if columns:
        parts.append(f"columns={columns}")
    return "+".join(parts)


# ---- atomic files ----------------------------------------------------------------------------------------
def read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole atomic file as strings, with {column: type} from its `name:type` header."""
    require_file(path)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    types: dict[str, str] = {}
    for cell in header:
        name, sep, kind = cell.rpartition(":")
        if not sep or not name:
            raise EncoreError(f"{path}: header cell {cell!r} is not `name:type` (RecBole atomic file header)")
        if kind not in ATOMIC_TYPES:
            raise EncoreError(f"{path}: column {name!r} has unknown type {kind!r}; known: {', '.join(ATOMIC_TYPES)}")
        if name in types:
            raise EncoreError(f"{path}: column {name!r} appears twice in the header")
        types[name] = kind
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3, header=0, names=list(types))
    return frame, types


def _floats(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column].replace("", np.nan), errors="coerce")
    bad = values.isna() & (frame[column] != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise EncoreError(f"{path}: column {column!r} must hold numbers; row {row + 2} has {frame[column].iloc[row]!r}")
    return values.to_numpy(np.float64)


def _require(types: dict[str, str], names: Sequence[str], path: Path, hint: str) -> None:
    missing = [n for n in names if n not in types]
    if missing:
        raise EncoreError(f"{path}: missing column(s) {missing}; columns are {list(types)} ({hint})")


def load_interactions(
    folder: Path, name: str, inter_fields: Sequence[str]
) -> tuple[pd.DataFrame, pd.Index, pd.Index, Path]:
    """(plays with integer user/item ids, user tokens, item tokens, path): row i of the tokens is id i."""
    path = folder / f"{name}.inter"
    frame, types = read_atomic(path)
    user_col, item_col, count_col = inter_fields
    _require(types, inter_fields, path, "rename them with --inter-fields USER,ITEM,COUNT")
    unknown = [c for c in types if c not in (*inter_fields, "timestamp")]
    if unknown:
        raise EncoreError(
            f"{path}: unknown column(s) {unknown}; an .inter file holds {list(inter_fields)} and optionally "
            "timestamp (user and item features go in the .user and .item files)"
        )
    if frame.empty:
        raise EncoreError(f"{path}: no interactions")
    users = pd.Index(np.sort(frame[user_col].unique()))
    items = pd.Index(np.sort(frame[item_col].unique()))
    plays = pd.DataFrame(
        {
            USER: users.get_indexer(frame[user_col]).astype(np.int64),
            ITEM: items.get_indexer(frame[item_col]).astype(np.int64),
            "num_repeat": _floats(frame, count_col, path),
        }
    )
    if np.isnan(plays["num_repeat"]).any():
        raise EncoreError(f"{path}: column {count_col!r} has empty values")
    if "timestamp" in types:
        plays["timestamp"] = _floats(frame, "timestamp", path)
    return plays, users, items, path


def load_side(path: Path, key: str, tokens: pd.Index, id_column: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A .user/.item file re-keyed to integer ids (rows for unknown tokens dropped); {} when the file is absent."""
    if not path.is_file():
        return pd.DataFrame({id_column: np.arange(len(tokens), dtype=np.int64)}), {}
    frame, types = read_atomic(path)
    _require(types, [key], path, f"the {path.suffix[1:]} file's key must be named like the .inter column")
    if frame[key].duplicated().any():
        dup = frame.loc[frame[key].duplicated(), key].iloc[0]
        raise EncoreError(f"{path}: {key} {dup!r} has more than one row")
    seq = [c for c, t in types.items() if t == "float_seq"]
    if seq:
        raise EncoreError(f"{path}: float_seq column(s) {seq} are not features; put vectors in a content file")
    ids = tokens.get_indexer(frame[key])
    frame = frame.drop(columns=[key]).assign(**{id_column: ids})
    frame = frame[frame[id_column] >= 0]
    for column, kind in types.items():
        if kind == "float" and column != key:
            frame[column] = _floats(frame, column, path)
        elif kind == "token" and column != key:
            frame[column] = frame[column].replace("", np.nan)
    types = {c: t for c, t in types.items() if c != key}
    return frame, types


def feature_fields(
    features: str, user_types: dict[str, str], item_types: dict[str, str], columns: Sequence[str] | None
) -> list[FieldConfig]:
    """TASTE feature settings over whatever the side files hold; `columns` restricts them by name."""
    if features not in FEATURE_SETTINGS:
        raise EncoreError(f"unknown feature setting {features!r} for {NAME}; known: {', '.join(FEATURE_SETTINGS)}")
    known = {**{c: ("user", t) for c, t in user_types.items()}, **{c: ("item", t) for c, t in item_types.items()}}
    if columns is not None:
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise EncoreError(f"unknown column(s) {unknown}; known feature columns: {sorted(known) or 'none'}")
        known = {c: known[c] for c in columns}
    fields = [FieldConfig(USER, "id", owner="user"), FieldConfig(ITEM, "id", owner="item")]
    for column, (owner, kind) in known.items():
        if kind == "token" and "cat" in features:
            fields.append(FieldConfig(column, "categorical", owner=owner))
        elif kind == "token_seq" and "cat" in features:
            fields.append(FieldConfig(column, "token_list", owner=owner, separator=" "))
        elif kind == "float" and "num" in features:
            fields.append(FieldConfig(column, "numeric", owner=owner, numeric_mode="quantile"))
    return fields


def content_path(folder: Path, content_file: str | None) -> Path:
    """The content file to use: the named one, or the only one in <folder>/content/."""
    content_dir = folder / "content"
    found = sorted(p for p in content_dir.glob("*") if p.suffix in CONTENT_SUFFIXES) if content_dir.is_dir() else []
    if content_file:
        path = content_dir / content_file
        if path.name != content_file or path not in found:
            raise EncoreError(
                f"content file {content_file!r} not found in {content_dir}; available: {[p.name for p in found]}"
            )
        return path
    if len(found) != 1:
        raise EncoreError(
            f"{content_dir}: {len(found)} content files {[p.name for p in found]}; choose one with --content-file"
        )
    return found[0]


def keyed_by_ids(arrays: ContentArrays, items: pd.Index) -> ContentArrays:
    """The same arrays keyed by integer item id; content of tokens the interactions never name is dropped."""
    ids = items.get_indexer(arrays.item_ids)
    keep = ids >= 0
    if not keep.any():
        example = arrays.item_ids[:3]
        raise EncoreError(f"no content key matches an item of the interactions (content keys look like {example})")
    kept = [str(i) for i in ids[keep]]
    return ContentArrays(kept, arrays.layers[keep], arrays.encoder, arrays.sha256)


def _checked_arguments(
    folder: Path, content: str, columns: str | Sequence[str] | None, inter_fields: Sequence[str]
) -> tuple[Sequence[str] | None, tuple[str, ...]]:
    """Fail early on a folder without <name>.inter, an unknown content setting or a bad inter_fields;
    returns the columns as a list (from "a,b" too) and the inter fields as a tuple."""
    if not (folder / f"{folder.name}.inter").is_file():
        raise EncoreError(
            f"no {folder.name}.inter in {folder}: point --data-root at a TASTE/RecBole atomic-file folder "
            "(<folder>/<folder name>.inter)"
        )
    if content not in CONTENT_SETTINGS:
        raise EncoreError(f"unknown content setting {content!r} for {NAME}; known: {', '.join(CONTENT_SETTINGS)}")
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    inter_fields = tuple(inter_fields)
    if len(inter_fields) != 3:
        raise EncoreError(f"inter_fields needs three names (user, item, count), got {list(inter_fields)}")
    return columns, inter_fields


def load_taste(
    root: Path,
    features: str = "id+cat+num",
    content: str = "none",
    *,
    protocol: ProtocolConfig | None = None,
    missing: MissingPolicy = "error",
    k: int = 32,
    token_layers: str = "all",
    progress: bool = True,
    inter_fields: Sequence[str] = DEFAULT_INTER_FIELDS,
    columns: str | Sequence[str] | None = None,
    content_file: str | None = None,
) -> DatasetSplits:
    """The atomic-file dataset in folder `root`, split by `protocol`, with features and content."""
    del progress  # nothing slow enough here to need a bar
    folder, name = Path(root), Path(root).name
    columns, inter_fields = _checked_arguments(folder, content, columns, inter_fields)
    cfg = protocol or ProtocolConfig()
    plays, user_tokens, item_tokens, inter_path = load_interactions(folder, name, inter_fields)
    user_path, item_path = folder / f"{name}.user", folder / f"{name}.item"
    user_table, user_types = load_side(user_path, inter_fields[0], user_tokens, USER)
    item_table, item_types = load_side(item_path, inter_fields[1], item_tokens, ITEM)
    clash = sorted(set(user_types) & set(item_types))
    if clash:
        raise EncoreError(f"column(s) {clash} appear in both {user_path.name} and {item_path.name}; rename one")
    fields = feature_fields(features, user_types, item_types, columns)

    files = {str(p): sha256_file(p) for p in (inter_path, user_path, item_path) if p.is_file()}
    split_dir = cache_root() / name / "splits" / cfg.hash()
    key = (str(folder.resolve()), files[str(inter_path)], cfg)
    if key not in _PROTOCOL_CACHE:
        _PROTOCOL_CACHE[key] = apply_protocol(plays, cfg, split_dir)
    splits = _PROTOCOL_CACHE[key]
    files.update(splits.files)

    used = {f.name for f in fields}
    user_table = user_table[[c for c in user_table.columns if c == USER or c in used]]
    item_table = item_table[[c for c in item_table.columns if c == ITEM or c in used]]
    run_files: dict[str, Path] = {}
    if content != "none":
        path = content_path(folder, content_file)
        arrays = keyed_by_ids(read_content_file(path), item_tokens)
        books_dir = split_dir / codebooks_dirname(path.stem, k, token_layers)
        items = np.sort(plays[ITEM].unique())
        item_content = build_item_content(
            arrays, content, items, splits.train_items, missing=missing, k=k, seed=cfg.seed,
            out_dir=books_dir if content == "tokens" else None, token_layers=token_layers,
        )  # fmt: skip
        item_table = item_table.merge(item_content.table, on=ITEM, how="outer")
        fields += item_content.fields
        files[str(path)] = arrays.sha256
        if content == "tokens":
            run_files["codebooks"] = books_dir

    variant = variant_of(cfg, content_file, ",".join(columns) if columns else None, k=k, token_layers=token_layers)
    return joined_dataset(
        NAME, splits, user_table, item_table, fields, features=features, content=content, files=files,
        variant=variant, run_files=run_files,
    )  # fmt: skip


DATASET = Dataset(NAME, load_taste, options=OPTIONS, content_settings=CONTENT_SETTINGS, variant_of=variant_of)
