"""Every Encore setting in one module (pydantic-settings, in the style of the FastAPI template's core/config.py).

Naming: settings shared by several parts (store, key, folders, encoder) are `ENCORE_*`; a service's own settings
are `ENCORE_RANKER_*`, `ENCORE_RETRIEVER_*` or `ENCORE_EMBEDDER_*`; a setting about calling another service is
named from the caller's side (`ENCORE_RANKER_RETRIEVER_URL`). Every field names its variable explicitly (the
first name given to `setting(...)`); the names after it are old names that still work, with a DeprecationWarning.

The classes: `EncoreSettings` (folders, store, encoder: training and services), `ServiceSettings` (what every
HTTP service adds: key, limits), and `RankerSettings`, `RetrieverSettings`, `EmbedderSettings`.
docs/configuration.md is generated from here: `python -m encore.settings --markdown > docs/configuration.md`.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from encore.audio.encoder import DEFAULT_ENCODER
from encore.audio.transform import MAX_ABS_CONTENT
from encore.text_query import default_query_encoder_dir

if TYPE_CHECKING:
    from encore.store import StoreSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the repository root; the one definition
log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()

# Room for the multipart framing and the small form fields around an uploaded file: the whole request body
# may exceed the file limit by this much before it is cut off while streaming.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def setting(default: Any, name: str, *old: str, description: str, **constraints: Any) -> Any:
    """A settings field read from the variable `name`, else from its deprecated `old` names (the first set wins)."""
    return Field(default, validation_alias=AliasChoices(name, *old), description=description, **constraints)


def variable_names(field: FieldInfo) -> list[str]:
    """[current name, *deprecated names] of a settings field."""
    alias = field.validation_alias
    assert isinstance(alias, AliasChoices), "every setting names its variable with setting(...)"
    return [str(choice) for choice in alias.choices]


class _Settings(BaseSettings):
    # populate_by_name: callers and tests pass fields by name (RankerSettings(max_k=10)). pydantic-settings then
    # also reads the variable env_prefix + field name, so the prefix keeps it inside ENCORE_ (and every field's
    # ENCORE_<FIELD> is one of its names: tests/test_configuration_doc.py).
    model_config = SettingsConfigDict(env_prefix="ENCORE_", extra="ignore", populate_by_name=True)

    @model_validator(mode="after")
    def _warn_old_names(self) -> _Settings:
        present = {key.upper() for key in os.environ}
        for field in type(self).model_fields.values():
            new, *old = variable_names(field)
            for name in (n for n in old if n in present):
                message = f"{name} is deprecated; set {new} instead (docs/configuration.md)"
                warnings.warn(message, DeprecationWarning, stacklevel=2)
                if (name, new) not in _warned:  # operators read logs, not warnings: once per process
                    _warned.add((name, new))
                    log.warning(message)
        return self


class EncoreSettings(_Settings):
    """Folders, the feature store and the audio encoder: read by training, the bootstrap and every service."""

    artifacts_dir: Path = setting(
        PROJECT_ROOT / "artifacts", "ENCORE_ARTIFACTS_DIR", description="bundle folders and the `CURRENT` pointer"
    )
    cache_dir: Path = setting(
        PROJECT_ROOT / "data",
        "ENCORE_CACHE_DIR",
        "ENCORE_DATA_DIR",
        description="data Encore derives and can rebuild: demo worlds, extracted features, frozen eval negatives, "
        "the bootstrap's feature tables",
    )
    datasets_dir: Path = setting(
        PROJECT_ROOT.parent / "shared" / "data",
        "ENCORE_DATASETS_DIR",
        "ENCORE_DATA_ROOT",
        description="the downloaded datasets Encore reads (Frappe, HetRec, audio); `--data-root` wins",
    )
    encoder: str = setting(
        DEFAULT_ENCODER,
        "ENCORE_ENCODER",
        description="audio encoder of the bootstrap's catalog and of the embedder (`musicnn`, `mfcc`, `muq`, "
        "`muq-mulan`, `clap`); a bundle's codebooks must match it",
    )
    weights_dir: Path = setting(
        PROJECT_ROOT / "weights",
        "ENCORE_WEIGHTS_DIR",
        description="local weight folders of the weighted encoders; never a hub",
    )
    feast_data_dir: Path = setting(
        PROJECT_ROOT / "data" / "feast",
        "ENCORE_FEAST_DATA_DIR",
        description="Feast registry, SQLite online db, offline parquet parts",
    )
    feast_project: str = setting("encore", "ENCORE_FEAST_PROJECT", description="Feast project (key prefix in Redis)")
    feast_online: Literal["sqlite", "redis", "redis_cluster"] = setting(
        "sqlite", "ENCORE_FEAST_ONLINE", description="online store: `sqlite`, `redis` or `redis_cluster`"
    )
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        "ENCORE_REDIS_URL",
        description="Redis of the online store (when `ENCORE_FEAST_ONLINE=redis`)",
    )

    @field_validator("feast_data_dir", "feast_project", "redis_url", "feast_online", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: Any) -> Any:
        if value == "":  # an empty variable means "the default" for the store's settings
            return cls.model_fields[info.field_name].default
        return value.lower() if info.field_name == "feast_online" and isinstance(value, str) else value

    def store(self) -> StoreSettings:
        """The feature store these settings describe."""
        from encore.store import StoreSettings

        return StoreSettings(self.feast_data_dir, self.feast_project, self.feast_online, self.redis_url)


class ServiceSettings(EncoreSettings):
    """What every HTTP service adds: the API key, the log level and the request limits (services/common)."""

    # A SecretStr, so a settings object that reaches a log or a traceback shows ********** instead of the key.
    api_key: SecretStr = setting(
        SecretStr(""), "ENCORE_API_KEY", description="key of write/admin calls; empty disables them"
    )
    log_level: str = setting("info", "ENCORE_LOG_LEVEL", description="log level")
    max_json_mb: float = setting(
        1.0,
        "ENCORE_MAX_JSON_MB",
        description="cap on any request body but an upload (413 beyond, before parsing)",
        gt=0,
    )
    max_in_flight: int = setting(
        256,
        "ENCORE_MAX_IN_FLIGHT",
        description="requests handled at once per process; beyond: 503 + `Retry-After`",
        ge=1,
    )
    header_timeout_s: float = setting(
        10.0,
        "ENCORE_HEADER_TIMEOUT_S",
        description="a request's headers must arrive within this (408 and closed)",
        gt=0,
    )
    body_timeout_s: float = setting(
        60.0, "ENCORE_BODY_TIMEOUT_S", description="a request's body must arrive within this after its headers", gt=0
    )
    keep_alive_s: int = setting(
        5, "ENCORE_KEEP_ALIVE_S", description="idle keep-alive connections close after this", ge=1
    )
    max_connections: int = setting(
        2048, "ENCORE_MAX_CONNECTIONS", description="open connections per process; beyond: 503 and closed", ge=1
    )
    onnx_device: Literal["auto", "cuda", "cpu"] = setting(
        "auto",
        "ENCORE_ONNX_DEVICE",
        description="ONNX Runtime providers of every session (encore/onnx_scorer.py): `auto` (CUDA when the "
        "onnxruntime-gpu build can load it, else CPU), `cuda` (no CPU fallback) or `cpu`; `/readyz` reports "
        "`session.get_providers()`",
    )

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 2**20)


class RankerSettings(ServiceSettings):
    """The ranker (:8000)."""

    retriever_url: str = setting(
        "http://127.0.0.1:8001", "ENCORE_RANKER_RETRIEVER_URL", "ENCORE_RETRIEVER_URL", description="the retriever"
    )
    ranker_retrieval: Literal["http", "inprocess"] = setting(
        "http",
        "ENCORE_RANKER_RETRIEVAL",
        description="where candidates come from: `http` (the retriever service at ENCORE_RANKER_RETRIEVER_URL) or "
        "`inprocess` (the retriever's search in each ranker worker, loaded from the ranker's bundle and set by the "
        "`ENCORE_RETRIEVER_*` variables; single node: no retriever service, but its memory in every worker; "
        "docs/performance.md)",
    )
    retriever_timeout_s: float = setting(
        0.5,
        "ENCORE_RANKER_RETRIEVER_TIMEOUT_S",
        "ENCORE_RETRIEVER_TIMEOUT_S",
        description="whole call to the retriever; past it the popularity fallback serves",
        gt=0,
    )
    candidates: int = setting(
        200,
        "ENCORE_RANKER_CANDIDATES",
        "ENCORE_CANDIDATES",
        description="asked from the retriever, then scored",
        ge=1,
        le=5000,
    )
    default_k: int = setting(
        20, "ENCORE_RANKER_DEFAULT_K", "ENCORE_DEFAULT_K", description="`k` of `/recommend` when none is given", ge=1
    )
    max_k: int = setting(100, "ENCORE_RANKER_MAX_K", "ENCORE_MAX_K", description="largest `k` of `/recommend`", ge=1)
    onnx_threads: int = setting(
        1, "ENCORE_RANKER_ONNX_THREADS", "ENCORE_ONNX_THREADS", description="intra-op threads of the ONNX session", ge=1
    )
    ranker_precision: Literal["fp32", "int8"] = setting(
        "fp32",
        "ENCORE_RANKER_PRECISION",
        description="the ranker's ONNX graph: `fp32`, or `int8` (the bundle's dynamically quantized graph, written "
        "only when its AUC on held-out rows stays within 0.001 of fp32's; a bundle without one serves fp32, with a "
        "warning; /readyz says which serves; docs/performance.md)",
    )
    user_cache_ttl_s: float = setting(
        60.0,
        "ENCORE_RANKER_USER_CACHE_TTL_S",
        "ENCORE_USER_CACHE_TTL_S",
        description="how long a user's profile is cached (profiles change once per training run)",
        ge=0,
    )
    user_cache_size: int = setting(
        100_000,
        "ENCORE_RANKER_USER_CACHE_SIZE",
        "ENCORE_USER_CACHE_SIZE",
        description="user profiles held in the cache",
        ge=1,
    )
    track_table_max_age_s: float = setting(
        300.0,
        "ENCORE_RANKER_TRACK_TABLE_MAX_AGE_S",
        "ENCORE_TRACK_TABLE_MAX_AGE_S",
        description="the in-process track table re-reads known tracks after this",
        gt=0,
    )
    track_miss_ttl_s: float = setting(
        1.0,
        "ENCORE_RANKER_TRACK_MISS_TTL_S",
        "ENCORE_TRACK_MISS_TTL_S",
        description="an id the store does not know is not re-read for this long",
        ge=0,
    )
    cold_panel_weight: float | None = setting(
        None,
        "ENCORE_RANKER_COLD_PANEL_WEIGHT",
        "ENCORE_COLD_PANEL_WEIGHT",
        description="how far a new track's score follows this listener's place among the bundle's reference panel "
        "(1) rather than how good a cold match it is overall (0); empty: the bundle's own "
        "(encore/cold_calibration.py)",
        ge=0,
        le=1,
    )
    ranker_embedder_url: str = setting(
        "",
        "ENCORE_RANKER_EMBEDDER_URL",
        description="the embedder as the page's browser reaches it (uploads, audio, events go there directly, by "
        "CORS); empty: the page's own host on port 8002",
    )
    read_events: bool = setting(
        True,
        "ENCORE_RANKER_READ_EVENTS",
        "ENCORE_READ_EVENTS",
        description="read user_activity (POST /events) on every request: recent tracks filtered, fold-in for new "
        "listeners (RecentActivity in services/ranker/pipeline.py)",
    )
    foldin_candidates: int = setting(
        50,
        "ENCORE_RANKER_FOLDIN_CANDIDATES",
        "ENCORE_FOLDIN_CANDIDATES",
        description="a new listener's fold-in candidates the model orders",
        ge=1,
    )
    item_cache_dir: str = setting(
        "auto",
        "ENCORE_RANKER_ITEM_CACHE_DIR",
        "ENCORE_ITEM_CACHE_DIR",  # pydantic-settings reads ENCORE_<field> too: listed, so it warns
        description="folder of the encoded item inputs, written once and memory-mapped by every worker of the host "
        "(one copy in memory); must be private to the service's user (0700); `auto`: "
        "`<temp dir>/encore-ranker-items-<uid>`; empty: each worker keeps its own",
    )
    track_snapshot_dir: str = setting(
        "auto",
        "ENCORE_RANKER_TRACK_SNAPSHOT_DIR",
        "ENCORE_TRACK_SNAPSHOT_DIR",  # pydantic-settings reads ENCORE_<field> too: listed, so it warns
        description="folder of the persisted track table (encore/track_snapshot.py): workers map it instead of "
        "reading every track from the store, and re-read only tracks written since it; `auto`: `track_table` in "
        "`ENCORE_FEAST_DATA_DIR` (where the bootstrap writes it) when that is writable, else "
        "`<temp dir>/encore-track-table-<uid>`; empty: every worker reads the store",
    )
    ranker_query_encoder_dir: str = setting(
        "",
        "ENCORE_RANKER_QUERY_ENCODER_DIR",
        description="the exported query encoder of `/recommend?q=` (`python -m training.export_text_encoder`); "
        "empty: `clap-text` in `ENCORE_WEIGHTS_DIR` when its export is complete (`--from clap`), else "
        "`minilm-l6-v2` there; without it a query answers 422 `query_unavailable`",
    )
    ranker_query_weight: float = setting(
        0.8,
        "ENCORE_RANKER_QUERY_WEIGHT",
        description="how far a free-text query (`q`) orders the candidates (1) rather than their click "
        "probability (0): the weight of the rank blend in docs/listening_room.md",
        ge=0,
        le=1,
    )
    expected_spec_hash: str = setting(
        "",
        "ENCORE_RANKER_EXPECTED_SPEC_HASH",
        "ENCORE_EXPECTED_SPEC_HASH",
        description="when set, bundles built for another feature spec are refused",
    )

    @property
    def query_encoder_path(self) -> Path:
        if self.ranker_query_encoder_dir:
            return Path(self.ranker_query_encoder_dir)
        return default_query_encoder_dir(self.weights_dir)

    @property
    def item_cache_path(self) -> Path | None:
        """Where the encoded item inputs are shared (None: not shared)."""
        if not self.item_cache_dir:
            return None
        if self.item_cache_dir == "auto":
            return Path(tempfile.gettempdir()) / f"encore-ranker-items-{os.getuid()}"
        return Path(self.item_cache_dir)

    def track_snapshot_path(self, data_dir: Path) -> Path | None:
        """Where the persisted track table lives for a store whose data is in `data_dir` (None: not persisted)."""
        if not self.track_snapshot_dir:
            return None
        if self.track_snapshot_dir != "auto":
            return Path(self.track_snapshot_dir)
        if os.access(data_dir, os.W_OK):
            return Path(data_dir) / "track_table"
        return Path(tempfile.gettempdir()) / f"encore-track-table-{os.getuid()}"

    @model_validator(mode="after")
    def _k_fits(self) -> RankerSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is larger than max_k={self.max_k}")
        return self


class RetrieverSettings(ServiceSettings):
    """The retriever (:8001). Its fields carry the `retriever_` prefix in Python too (their names since v0.1)."""

    retriever_port: int = setting(
        8001,
        "ENCORE_RETRIEVER_PORT",
        description="port of `python -m services.retriever.main` (uvicorn's `--port` otherwise)",
    )
    retriever_default_k: int = setting(
        100, "ENCORE_RETRIEVER_DEFAULT_K", description="candidates when a request gives no `k`", ge=1
    )
    retriever_max_k: int = setting(1000, "ENCORE_RETRIEVER_MAX_K", description="a larger `k` is refused with 422", ge=1)
    retriever_refresh_s: float = setting(
        60.0,
        "ENCORE_RETRIEVER_REFRESH_S",
        description="seconds between pick-ups of tracks pushed to the store since the bundle; 0: at start only",
        ge=0,
    )
    # One (10k x 65) matrix-vector product takes ~0.2 ms on one thread but ~12 ms p50 with OpenBLAS's default
    # threads on two busy cores (threads spin against each other).
    retriever_blas_threads: int = setting(
        1,
        "ENCORE_RETRIEVER_BLAS_THREADS",
        description="BLAS threads of the top-k matmul (more thrash on a busy box)",
        ge=1,
    )
    retriever_index: Literal["exact", "ivf", "auto"] = setting(
        "auto",
        "ENCORE_RETRIEVER_INDEX",
        description="top-k search: `exact` (numpy), `ivf` (faiss IVF-flat, approximate), `auto` (ivf from "
        "`ENCORE_RETRIEVER_IVF_MIN_ITEMS` items on); numbers in docs/performance.md",
    )
    retriever_ivf_min_items: int = setting(
        1_000_000, "ENCORE_RETRIEVER_IVF_MIN_ITEMS", description="`auto` switches to IVF from this many items", ge=1
    )
    retriever_ivf_nlist: int = setting(
        0, "ENCORE_RETRIEVER_IVF_NLIST", description="IVF cells; 0: 4 * sqrt(n_items)", ge=0
    )
    retriever_ivf_nprobe: int = setting(
        32, "ENCORE_RETRIEVER_IVF_NPROBE", description="IVF cells searched per query, to start with", ge=1
    )
    retriever_ivf_target_recall: float = setting(
        0.95,
        "ENCORE_RETRIEVER_IVF_TARGET_RECALL",
        description="at load, nprobe doubles until sampled users' recall@200 against exact search reaches this "
        "(0: no check)",
        ge=0,
        le=1,
    )
    retriever_max_abs_content: float = setting(
        MAX_ABS_CONTENT,
        "ENCORE_RETRIEVER_MAX_ABS_CONTENT",
        description="`POST /items` refuses a content value with |x| above this (the content transform's bound)",
        gt=0,
    )
    retriever_cold_share: float = setting(
        0.3,
        "ENCORE_RETRIEVER_COLD_SHARE",
        description="at least this share of a known user's candidates are tracks added since the bundle (their "
        "best-matching ones), so new tracks reach the ranker; 0: new tracks compete on raw scores alone",
        ge=0,
        le=1,
    )
    retriever_foldin_prior: float = setting(
        10.0,
        "ENCORE_RETRIEVER_FOLDIN_PRIOR",
        description="a known user's vector is blended with the mean of their played tracks' vectors (training plays "
        "and recent events), weight n / (n + prior) on the trained vector, n = their training plays: a listener a "
        "retrain saw only a few times keeps fold-in's quality; 0: the trained vector alone",
        ge=0,
    )
    retriever_model: str = setting(
        "",
        "ENCORE_RETRIEVER_MODEL",
        description="refuse bundles whose retriever is another model (`BPR`, `VBPR`, `FREEDOM`, `LGMRec`); empty: any",
    )


class EmbedderSettings(ServiceSettings):
    """The embedder (:8002). Its encoder (`ENCORE_ENCODER`, `ENCORE_WEIGHTS_DIR`) is shared with the bootstrap."""

    max_upload_mb: float = setting(
        50.0,
        "ENCORE_EMBEDDER_MAX_UPLOAD_MB",
        "ENCORE_MAX_UPLOAD_MB",
        description="largest audio file, in MiB (enforced while streaming)",
        gt=0,
    )
    max_audio_seconds: float = setting(
        600.0,
        "ENCORE_EMBEDDER_MAX_AUDIO_SECONDS",
        "ENCORE_MAX_AUDIO_SECONDS",
        description="only the first N seconds are decoded and encoded",
        gt=0,
    )
    encoder_runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = setting(
        "auto",
        "ENCORE_EMBEDDER_ENCODER_RUNTIME",
        "ENCORE_ENCODER_RUNTIME",
        description="`auto` (the ONNX fp32 export when there is one, else torch), `torch`, `onnx`, `onnx-int8`",
    )
    encoder_threads: int | None = setting(
        None,
        "ENCORE_EMBEDDER_ENCODER_THREADS",
        "ENCORE_ENCODER_THREADS",
        description="ONNX Runtime intra-op threads per encode (empty: all cores)",
        ge=1,
    )
    retriever_url: str = setting(
        "http://127.0.0.1:8001",
        "ENCORE_EMBEDDER_RETRIEVER_URL",
        "ENCORE_RETRIEVER_URL",
        description="the retriever, told of every new track; empty: do not notify",
    )
    retriever_timeout_s: float = setting(
        1.0,
        "ENCORE_EMBEDDER_RETRIEVER_TIMEOUT_S",
        "ENCORE_RETRIEVER_TIMEOUT_S",
        description="timeout of the call that tells the retriever of a new track",
        gt=0,
    )
    concurrency: int = setting(
        2,
        "ENCORE_EMBEDDER_CONCURRENCY",
        "ENCORE_CONCURRENCY",
        description="decodes/encodes at once (each holds a core)",
        ge=1,
    )
    # Each upload may take ~2.5x its file size while decoded, so this times the upload cap bounds upload memory.
    max_uploads_in_flight: int = setting(
        4,
        "ENCORE_EMBEDDER_MAX_UPLOADS_IN_FLIGHT",
        "ENCORE_MAX_UPLOADS_IN_FLIGHT",
        description="uploads held in memory at once; beyond: 503 + `Retry-After`",
        ge=1,
    )
    # POST /events (encore/events.py, docs/events.md)
    events_max_batch: int = setting(
        1000,
        "ENCORE_EMBEDDER_EVENTS_MAX_BATCH",
        "ENCORE_EVENTS_MAX_BATCH",
        description="events per request; more: 413",
        ge=1,
        le=10_000,
    )
    events_max_future_s: float = setting(
        300.0,
        "ENCORE_EMBEDDER_EVENTS_MAX_FUTURE_S",
        "ENCORE_EVENTS_MAX_FUTURE_S",
        description="an event time further ahead than this is refused",
        ge=0,
    )
    events_retention_days: float = setting(
        7.0,
        "ENCORE_EMBEDDER_EVENTS_RETENTION_DAYS",
        "ENCORE_EVENTS_RETENTION_DAYS",
        description="seen event ids are kept this long; older events are refused",
        gt=0,
    )
    events_recent_n: int = setting(
        50,
        "ENCORE_EMBEDDER_EVENTS_RECENT_N",
        "ENCORE_EVENTS_RECENT_N",
        description="events kept in user_activity.recent_tracks",
        ge=1,
        le=1000,
    )
    events_compact_parts: int = setting(
        64,
        "ENCORE_EMBEDDER_EVENTS_COMPACT_PARTS",
        "ENCORE_EVENTS_COMPACT_PARTS",
        description="parts per level of the offline event log before they are merged into one",
        ge=2,
    )

    # The listening room (docs/listening_room.md).
    embedder_cors_origins: str = setting(
        "http://127.0.0.1:8000,http://localhost:8000",
        "ENCORE_EMBEDDER_CORS_ORIGINS",
        description="origins whose pages may call the embedder from a browser (CORS), comma-separated: the "
        "ranker's page",
    )
    embedder_keep_audio: bool = setting(
        False,
        "ENCORE_EMBEDDER_KEEP_AUDIO",
        description="keep uploaded audio for playback (`make run` turns it on)",
    )
    embedder_audio_dir: Path | None = setting(
        None,
        "ENCORE_EMBEDDER_AUDIO_DIR",
        description="the kept audio, content-addressed (empty: `audio/` in `ENCORE_CACHE_DIR`)",
    )
    embedder_audio_max_mb: float = setting(
        512.0,
        "ENCORE_EMBEDDER_AUDIO_MAX_MB",
        description="size cap of the kept audio; past it the least recently played files go first",
        gt=0,
    )
    embedder_audio_link_ttl_s: int = setting(
        600,
        "ENCORE_EMBEDDER_AUDIO_LINK_TTL_S",
        description="how long a signed audio link (`POST /tracks/{id}/audio-link`) opens the audio",
        ge=1,
        le=86_400,
    )

    @property
    def audio_folder(self) -> Path:
        return self.embedder_audio_dir or self.cache_dir / "audio"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


# --- the generated docs/configuration.md -------------------------------------------------------------------

SECTIONS: tuple[tuple[str, type[_Settings], str], ...] = (
    ("Shared", EncoreSettings, "training, the bootstrap, `make run` and every service"),
    ("Every service", ServiceSettings, "the ranker, retriever and embedder"),
    ("Ranker", RankerSettings, "`services/ranker`"),
    ("Retriever", RetrieverSettings, "`services/retriever`"),
    ("Embedder", EmbedderSettings, "`services/embedder`"),
)


def own_fields(cls: type[_Settings]) -> dict[str, FieldInfo]:
    """The fields `cls` declares itself (not those of its bases)."""
    inherited = {name for base in cls.__mro__[1:] for name in getattr(base, "model_fields", {})}
    return {name: field for name, field in cls.model_fields.items() if name not in inherited}


def deprecated_names() -> dict[str, list[str]]:
    """old variable -> the current variables that still read it."""
    out: dict[str, list[str]] = {}
    for _, cls, _ in SECTIONS:
        for field in own_fields(cls).values():
            new, *old = variable_names(field)
            for name in old:
                out.setdefault(name, []).append(new)
    return out


def all_variable_names() -> set[str]:
    """Every variable Encore reads, current and deprecated."""
    return {name for _, cls, _ in SECTIONS for f in own_fields(cls).values() for name in variable_names(f)}


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Path):
        return os.path.relpath(value, PROJECT_ROOT) + "/"
    return "" if value is None else str(value)


def markdown() -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- generated by `python -m encore.settings --markdown > docs/configuration.md`; "
        "tests/test_configuration_doc.py fails when it is stale -->",
        "",
        "Every setting is an environment variable, read by one module, `encore/settings.py` (pydantic-settings).",
        "Shared settings are `ENCORE_*`; a service's own are `ENCORE_RANKER_*`, `ENCORE_RETRIEVER_*` or",
        "`ENCORE_EMBEDDER_*`; a setting about calling another service is named from the caller's side",
        "(`ENCORE_RANKER_RETRIEVER_URL`). Folder defaults are relative to the repository root. Old names still",
        "work, with a deprecation warning in the log; they are listed under each table and in CHANGELOG.md.",
    ]
    for title, cls, who in SECTIONS:
        lines += ["", f"## {title}", "", f"Read by {who}.", "", "| variable | default | meaning |", "|---|---|---|"]
        renamed = []
        for field in own_fields(cls).values():
            new, *old = variable_names(field)
            description = (field.description or "").replace("|", "\\|")
            default = _shown(field.default)
            lines.append(f"| `{new}` | {f'`{default}`' if default else 'empty'} | {description} |")
            renamed += [f"`{name}` -> `{new}`" for name in old]
        if renamed:
            lines += ["", "Deprecated names: " + ", ".join(renamed) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Encore's settings: the variables and their defaults.")
    parser.add_argument("--markdown", action="store_true", help="print docs/configuration.md")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(), end="")
        return 0
    for _, cls, _ in SECTIONS:
        print(cls().model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
