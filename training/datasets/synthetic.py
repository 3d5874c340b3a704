"""A generated music world with a known generative model: users, tracks with rendered audio, and plays.

Part of a track's appeal is carried by how it sounds (tempo, brightness, rhythm density, mode, instrument),
and each track's audio is synthesized from exactly those attributes, so an audio encoder can recover
part of the signal from the waveform alone. The true click and exposure probabilities are kept, so the
oracle AUC of any evaluation set is known. Everything is deterministic from (seed, size parameters).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logsumexp
from scipy.stats import poisson
from tqdm import tqdm

from encore.errors import EncoreError
from encore.io import sha256_file, write_json_atomic
from encore.schema import FieldConfig
from encore.settings import EncoreSettings
from training.datasets.base import DatasetSplits, taste_fields
from training.datasets.content import (
    CONTENT_MODES,
    ContentArrays,
    MissingPolicy,
    build_item_content,
    codebooks_dirname,
    token_tag,
)
from training.datasets.dataset import Dataset, RecallSource
from training.datasets.oracle import GenerativeTruth
from training.datasets.protocol import USER, ProtocolConfig, ProtocolSplits, apply_protocol, joined_dataset

GENERATOR_VERSION = 2
WORLD_FILE = "world.json"
TABLES = ("users", "tracks", "plays")
LATENT_FILE = "latent.npz"

GENRES = ("rock", "pop", "jazz", "electronic", "folk", "hiphop", "classical", "metal")
COUNTRIES = ("US", "BR", "DE", "FR", "JP", "ES", "GB", "MX")
LANGUAGES = ("en", "pt", "de", "fr", "ja", "es")
COUNTRY_LANGUAGE = {"US": "en", "BR": "pt", "DE": "de", "FR": "fr", "JP": "ja", "ES": "es", "GB": "en", "MX": "es"}
INSTRUMENTS = ("pad", "lead", "pluck", "bell")
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# Audio attributes that carry taste: tempo, brightness, rhythm density, mode (+-1), instrument one-hot.
N_AUDIO = 4 + len(INSTRUMENTS)
USER_COLUMNS = ("user_id", "country", "age", "gender")
TRACK_COLUMNS = (
    "track_id", "artist_id", "genre", "key", "mode", "language", "release_year",
    "tempo_bpm", "brightness", "density", "instrument", "audio_file",
)  # fmt: skip
PLAY_COLUMNS = ("user_id", "track_id", "num_repeat", "timestamp", "p_click", "p_include")


@dataclass(frozen=True)
class WorldParams:
    """Size and signal knobs. The defaults build in well under a minute and ~100 MB here."""

    seed: int = 2024
    n_users: int = 2000
    n_tracks: int = 1500
    n_artists: int = 250
    mean_plays: float = 30.0  # interactions per user (log-normal around this)
    audio_seconds: float = 2.0
    sample_rate: int = 22_050
    mf_dim: int = 8
    # Weights of the taste terms; audio is the largest so content can visibly help cold items.
    w_audio: float = 1.3
    w_appeal: float = 0.9  # weight of the global audio appeal in a track's popularity
    w_genre: float = 0.6
    w_mf: float = 0.6
    w_language: float = 0.5
    w_era: float = 0.4
    click_scale: float = 1.6  # click logit = click_bias + click_scale * taste
    click_bias: float = -1.2
    exposure_taste: float = 1.0  # exposure logit = popularity + exposure_taste * taste
    repeat_rate: float = 2.0  # extra repeats of a clicked play ~ Poisson(repeat_rate * p_click)


SIZES: dict[str, WorldParams] = {
    "quick": WorldParams(n_users=300, n_tracks=240, n_artists=40, mean_plays=25.0, audio_seconds=1.5),
    "small": WorldParams(n_users=800, n_tracks=600, n_artists=100),
    "default": WorldParams(),
    "large": WorldParams(n_users=8000, n_tracks=6000, n_artists=900, mean_plays=40.0),
}


def world_params(size: str = "default", seed: int | None = None) -> WorldParams:
    if size not in SIZES:
        raise EncoreError(f"unknown synthetic size {size!r}; known sizes: {', '.join(SIZES)}")
    params = SIZES[size]
    return replace(params, seed=seed) if seed is not None else params


def params_hash(params: WorldParams) -> str:
    doc = json.dumps({"generator": GENERATOR_VERSION, **asdict(params)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:12]


def default_root() -> Path:
    """Where worlds are cached: $ENCORE_CACHE_DIR, else data/ under the repository root (gitignored)."""
    return EncoreSettings().cache_dir


# ---- the world on disk -------------------------------------------------------------------------------
@dataclass
class World:
    """A built world: tables, latent factors for the oracle, and the folder it lives in."""

    folder: Path
    params: WorldParams
    users: pd.DataFrame
    tracks: pd.DataFrame
    plays: pd.DataFrame
    latent: dict[str, np.ndarray]

    def audio_paths(self) -> dict[str, Path]:
        return {str(t): self.folder / f for t, f in zip(self.tracks.track_id, self.tracks.audio_file, strict=True)}

    def files(self) -> dict[str, str]:
        """path -> sha256 of the world's tables, for run manifests."""
        doc = json.loads((self.folder / WORLD_FILE).read_text())
        return {str(self.folder / name): sha for name, sha in doc["steps"]["tables"]["files"].items()}

    def truth(self, users: np.ndarray, tracks: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """(P(num_repeat >= threshold | played), P(track is among the user's plays)) for each (user, track)."""
        lat = self.latent
        u, i = np.asarray(users, dtype=np.int64), np.asarray(tracks, dtype=np.int64)
        taste = _taste(lat, u, i, self.params)
        p_click = expit(self.params.click_bias + self.params.click_scale * taste)
        p_label = _p_repeat_at_least(p_click, threshold, self.params.repeat_rate)
        pi = np.exp(lat["pop"][i] + self.params.exposure_taste * taste - lat["log_z"][u])
        return p_label, np.minimum(1.0, lat["n_plays"][u] * pi)

    def generative_truth(self, threshold: int) -> GenerativeTruth:
        """Exposure weights over the catalog, plays per user and P(label | played): what the exact oracle needs."""
        lat, params = self.latent, self.params
        tracks = np.arange(len(lat["pop"]))

        def weights(users: np.ndarray) -> np.ndarray:
            taste = _taste(lat, np.asarray(users)[:, None], tracks[None, :], params)
            return np.exp(lat["pop"][None, :] + params.exposure_taste * taste - lat["log_z"][users][:, None])

        return GenerativeTruth(weights, lat["n_plays"].astype(np.int64), lambda u, i: self.truth(u, i, threshold)[0])


def load_world(params: WorldParams, root: Path | None = None, progress: bool = True) -> World:
    """The world for `params`, built (or rebuilt) under root/synthetic/<hash>/ unless a verified copy exists."""
    folder = (root or default_root()) / "synthetic" / params_hash(params)
    if not _verified(folder, params):
        build_world(params, folder, progress=progress)
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLES}
    for name, expected in zip(TABLES, (USER_COLUMNS, TRACK_COLUMNS, PLAY_COLUMNS), strict=True):
        require_columns(tables[name], expected, f"{folder / name}.parquet")
    with np.load(folder / LATENT_FILE, allow_pickle=False) as npz:
        latent = {k: npz[k] for k in npz.files}
    return World(folder, params, tables["users"], tables["tracks"], tables["plays"], latent)


def require_columns(frame: pd.DataFrame, expected: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise EncoreError(f"{what}: missing column(s) {missing}; known columns are {list(frame.columns)}")


def _verified(folder: Path, params: WorldParams) -> bool:
    """True when world.json says complete and every recorded checksum still matches."""
    try:
        doc = json.loads((folder / WORLD_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not doc.get("complete") or doc.get("params") != asdict(params) or doc.get("generator") != GENERATOR_VERSION:
        return False
    recorded = {**doc["steps"]["tables"]["files"], **doc["steps"]["audio"]["files"]}
    return all((folder / name).is_file() and sha256_file(folder / name) == sha for name, sha in recorded.items())


def build_world(params: WorldParams, folder: Path, progress: bool = True) -> Path:
    """Generate tables and audio into `folder`; world.json is rewritten after every step."""
    started = time.time()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    doc: dict = {"generator": GENERATOR_VERSION, "params": asdict(params), "complete": False, "steps": {}}

    users, tracks, plays, latent = generate_tables(params)
    files = {}
    for name, frame in (("users", users), ("tracks", tracks), ("plays", plays)):
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        files[f"{name}.parquet"] = sha256_file(folder / f"{name}.parquet")
    np.savez(folder / LATENT_FILE, **latent)
    files[LATENT_FILE] = sha256_file(folder / LATENT_FILE)
    doc["counts"] = {
        "users": len(users),
        "tracks": len(tracks),
        "artists": int(tracks.artist_id.nunique()),
        "plays": len(plays),
        "positive_share_t2": float((plays.num_repeat >= 2).mean()),
    }
    doc["steps"]["tables"] = {"files": files, "seconds": round(time.time() - started, 2)}
    doc["steps"]["audio"] = {"files": {}}
    write_json_atomic(folder / WORLD_FILE, doc)

    t0 = time.time()
    audio_files = render_catalog(tracks, params, folder, progress=progress)
    doc["steps"]["audio"] = {"files": audio_files, "seconds": round(time.time() - t0, 2)}
    doc["complete"] = True
    doc["build_seconds"] = round(time.time() - started, 2)
    doc["bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    write_json_atomic(folder / WORLD_FILE, doc)
    return folder


# ---- the generative model ----------------------------------------------------------------------------
def generate_tables(params: WorldParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Users, tracks, plays and the latent factors behind them (all vectorized numpy).

    One generator draws everything in a fixed order (catalog, listeners, plays, their outcomes, the tracks'
    keys); a world's checksum depends on that order, so the steps below keep it.
    """
    rng = np.random.default_rng([params.seed, 1])
    catalog = _draw_catalog(rng, params)
    listeners = _draw_listeners(rng, params)
    latent = {
        "u_audio": listeners["u_audio"], "u_genre": listeners["u_genre"], "p": listeners["p"],
        "user_language": listeners["user_language"], "peak_year": (2024 - listeners["age"] + 18).astype(np.float64),
        "audio": catalog["audio"], "genre": catalog["genre"], "q": catalog["q"], "language": catalog["language"],
        "year": catalog["year"].astype(np.float64), "pop": catalog["pop"],
        "n_plays": listeners["n_plays"].astype(np.float64),
    }  # fmt: skip
    pu, pi = _draw_plays(rng, params, latent, listeners["n_plays"])  # sets latent["log_z"]
    plays_df = _play_outcomes(rng, params, latent, pu, pi, listeners["n_plays"])
    users_df = pd.DataFrame(
        {
            "user_id": np.arange(params.n_users),
            "country": np.array(COUNTRIES)[listeners["country"]],
            "age": listeners["age"],
            "gender": listeners["gender"],
        }
    )
    return users_df, _tracks_frame(rng, catalog), plays_df, latent


def _draw_catalog(rng: np.random.Generator, params: WorldParams) -> dict[str, np.ndarray]:
    """Artists and their tracks: sound, genre, language, year, popularity and the tracks' MF factors."""
    n_t, n_a, n_g = params.n_tracks, params.n_artists, len(GENRES)
    # Genres set the centre of their artists' sound; artists set the centre of their tracks'.
    genre_audio = rng.normal(0, 1.0, (n_g, 3))
    genre_major = rng.uniform(0.2, 0.85, n_g)
    artist_genre = rng.choice(n_g, n_a, p=_zipf(n_g, 0.6, rng))
    artist_style = genre_audio[artist_genre] + rng.normal(0, 0.5, (n_a, 3))
    artist_instrument = rng.integers(0, len(INSTRUMENTS), n_a)
    artist_language = rng.choice(len(LANGUAGES), n_a, p=_zipf(len(LANGUAGES), 1.0, rng))
    artist_era = rng.uniform(1965, 2022, n_a)
    artist_pop = rng.normal(0, 0.8, n_a)
    artist_mf = rng.normal(0, 1, (n_a, params.mf_dim))

    track_artist = rng.choice(n_a, n_t, p=_zipf(n_a, 0.8, rng))
    genre = np.where(rng.random(n_t) < 0.9, artist_genre[track_artist], rng.integers(0, n_g, n_t))
    # Within-artist variation is large on purpose: metadata alone cannot say how a track sounds.
    continuous = 0.6 * artist_style[track_artist] + rng.normal(0, 0.8, (n_t, 3))  # tempo, brightness, density
    major = rng.random(n_t) < genre_major[genre]
    instrument = np.where(rng.random(n_t) < 0.5, artist_instrument[track_artist], rng.integers(0, 4, n_t))
    audio = np.concatenate(
        [continuous, np.where(major, 1.0, -1.0)[:, None], np.eye(len(INSTRUMENTS))[instrument] * 1.5], axis=1
    )
    year = np.clip(np.round(artist_era[track_artist] + rng.normal(0, 3, n_t)), 1960, 2024).astype(np.int64)
    # Some sounds appeal to nearly everyone: a global direction in audio space drives part of popularity,
    # so a track's sound predicts its reach even when the track is new (the cold-start signal).
    appeal_dir = rng.normal(0, 1, N_AUDIO)
    appeal = audio @ appeal_dir / np.sqrt(N_AUDIO)
    pop = params.w_appeal * appeal + artist_pop[track_artist] + rng.normal(0, 0.5, n_t)
    q = (0.6 * artist_mf[track_artist] + 0.8 * rng.normal(0, 1, (n_t, params.mf_dim))) / np.sqrt(params.mf_dim)
    return {
        "track_artist": track_artist, "genre": genre, "continuous": continuous, "major": major,
        "instrument": instrument, "audio": audio, "year": year, "pop": pop, "q": q,
        "language": artist_language[track_artist],
    }  # fmt: skip


def _draw_listeners(rng: np.random.Generator, params: WorldParams) -> dict[str, np.ndarray]:
    """Users: country, age, gender, audio and genre taste (shared within segments), MF factors, activity."""
    n_u, n_g = params.n_users, len(GENRES)
    country = rng.choice(len(COUNTRIES), n_u, p=_zipf(len(COUNTRIES), 0.9, rng))
    age = np.clip(np.round(16 + rng.gamma(2.2, 8.0, n_u)), 15, 80).astype(np.int64)
    gender = rng.choice(np.array(["f", "m", "x"]), n_u, p=[0.47, 0.49, 0.04])
    # Audio taste is shared within segments (age band x language), so it is learnable from few plays each.
    segment = np.digitize(age, [25, 35, 50]) * len(LANGUAGES) + [
        LANGUAGES.index(COUNTRY_LANGUAGE[COUNTRIES[c]]) for c in country
    ]
    centers = rng.normal(0, 1, (4 * len(LANGUAGES), N_AUDIO))
    u_audio = centers[segment] + 0.6 * rng.normal(0, 1, (n_u, N_AUDIO))
    u_genre = rng.normal(0, 1, (n_u, n_g))
    p = rng.normal(0, 1, (n_u, params.mf_dim)) / np.sqrt(params.mf_dim) * 1.5
    user_language = np.array([LANGUAGES.index(COUNTRY_LANGUAGE[COUNTRIES[c]]) for c in country])
    n_plays = np.clip(np.round(rng.lognormal(np.log(params.mean_plays), 0.5, n_u)), 8, params.n_tracks // 3)
    return {
        "country": country, "age": age, "gender": gender, "u_audio": u_audio, "u_genre": u_genre, "p": p,
        "user_language": user_language, "n_plays": n_plays.astype(np.int64),
    }  # fmt: skip


def _draw_plays(
    rng: np.random.Generator, params: WorldParams, latent: dict[str, np.ndarray], n_plays: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's plays: a draw without replacement, weighted by exposure (Gumbel top-k), in user blocks.

    Returns (user, track) per play and stores each user's exposure normalizer as latent["log_z"]."""
    n_u, n_t = params.n_users, params.n_tracks
    log_z = np.empty(n_u)
    chosen_u, chosen_i = [], []
    for start in range(0, n_u, 512):
        users = np.arange(start, min(start + 512, n_u))
        taste = _taste(latent, users[:, None], np.arange(n_t)[None, :], params)
        logits = latent["pop"][None, :] + params.exposure_taste * taste
        log_z[users] = logsumexp(logits, axis=1)
        keys = logits + rng.gumbel(size=logits.shape)
        order = np.argsort(-keys, axis=1)
        for row, u in enumerate(users):
            chosen_u.append(np.full(n_plays[u], u))
            chosen_i.append(order[row, : n_plays[u]])
    latent["log_z"] = log_z
    return np.concatenate(chosen_u), np.concatenate(chosen_i)


def _play_outcomes(
    rng: np.random.Generator,
    params: WorldParams,
    latent: dict[str, np.ndarray],
    pu: np.ndarray,
    pi: np.ndarray,
    n_plays: np.ndarray,
) -> pd.DataFrame:
    """Clicks, repeats and timestamps of the plays, with each play's click and inclusion probability."""
    taste = _taste(latent, pu, pi, params)
    p_click = expit(params.click_bias + params.click_scale * taste)
    clicked = rng.random(len(pu)) < p_click
    num_repeat = np.where(clicked, 2 + rng.poisson(params.repeat_rate * p_click), 1)
    # Two years of listening; each user is active in a window of their own.
    start_s = rng.uniform(0, 365 * 86400, params.n_users)
    timestamp = (1_704_067_200 + start_s[pu] + rng.uniform(0, 365 * 86400, len(pu))).astype(np.int64)
    exposure = latent["pop"][pi] + params.exposure_taste * taste - latent["log_z"][pu]
    p_include = np.minimum(1.0, n_plays[pu] * np.exp(exposure))
    return pd.DataFrame(
        {
            "user_id": pu,
            "track_id": pi,
            "num_repeat": num_repeat.astype(np.int64),
            "timestamp": timestamp,
            "p_click": p_click,
            "p_include": p_include,
        }
    ).sort_values(["user_id", "timestamp"], ignore_index=True)


def _tracks_frame(rng: np.random.Generator, catalog: dict[str, np.ndarray]) -> pd.DataFrame:
    n_t, continuous = len(catalog["track_artist"]), catalog["continuous"]
    return pd.DataFrame(
        {
            "track_id": np.arange(n_t),
            "artist_id": catalog["track_artist"],
            "genre": np.array(GENRES)[catalog["genre"]],
            "key": np.array(["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"])[
                rng.integers(0, 12, n_t)
            ],
            "mode": np.where(catalog["major"], "major", "minor"),
            "language": np.array(LANGUAGES)[catalog["language"]],
            "release_year": catalog["year"],
            "tempo_bpm": np.clip(110 * 2 ** (0.35 * continuous[:, 0]), 60, 190),
            "brightness": continuous[:, 1],
            "density": continuous[:, 2],
            "instrument": np.array(INSTRUMENTS)[catalog["instrument"]],
            "audio_file": [f"audio/{t:06d}.flac" for t in range(n_t)],
        }
    )


def _taste(lat: dict[str, np.ndarray], u: np.ndarray, i: np.ndarray, params: WorldParams) -> np.ndarray:
    """The latent affinity of user u for track i (broadcasting over u and i)."""
    audio = np.einsum("...k,...k->...", lat["u_audio"][u], lat["audio"][i]) / np.sqrt(N_AUDIO)
    genre = lat["u_genre"][u, lat["genre"][i]]
    mf = np.einsum("...k,...k->...", lat["p"][u], lat["q"][i])
    language = (lat["user_language"][u] == lat["language"][i]).astype(np.float64) - 0.3
    era = 1.0 - np.abs(lat["peak_year"][u] - lat["year"][i]) / 15.0
    return (
        params.w_audio * audio
        + params.w_genre * genre
        + params.w_mf * mf
        + params.w_language * language
        + params.w_era * np.clip(era, -1.5, 1.0)
    )


def _p_repeat_at_least(p_click: np.ndarray, threshold: int, repeat_rate: float) -> np.ndarray:
    """P(num_repeat >= threshold): 1 below 2; else P(click) * P(Poisson(rate * p) >= threshold - 2)."""
    if threshold <= 1:
        return np.ones_like(p_click)
    return p_click * poisson.sf(threshold - 3, repeat_rate * p_click) if threshold > 2 else p_click


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(w / w.sum())


# ---- audio rendering ---------------------------------------------------------------------------------
def render_catalog(tracks: pd.DataFrame, params: WorldParams, folder: Path, progress: bool = True) -> dict[str, str]:
    """Render and write every track as 16-bit FLAC; returns relative path -> sha256."""
    import soundfile as sf  # deferred: only building needs it

    (folder / "audio").mkdir(exist_ok=True)
    files = {}
    rows = tracks.itertuples(index=False)
    for row in tqdm(rows, total=len(tracks), desc="render audio", unit="track", disable=not progress):
        wave = render_track(row, params)
        path = folder / row.audio_file
        sf.write(path, wave, params.sample_rate, subtype="PCM_16", format="FLAC")
        files[row.audio_file] = sha256_file(path)
    return files


def render_track(row: Any, params: WorldParams) -> np.ndarray:
    """A few seconds of music from a track's latent attributes: melody + chord + drums, float32 mono.

    `row` is one track row (a namedtuple from itertuples or a Series): tempo_bpm, key, mode, brightness,
    density, instrument and track_id are read.
    """
    rng = np.random.default_rng([params.seed, 2, int(row.track_id)])
    sr, n = params.sample_rate, int(params.audio_seconds * params.sample_rate)
    t = np.arange(n) / sr
    beat = 60.0 / row.tempo_bpm
    key = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"].index(row.key)
    scale = MAJOR if row.mode == "major" else MINOR
    # Brightness sets the spectral tilt of every tone: bright tracks keep their upper harmonics.
    tilt = float(np.clip(2.0 - 0.7 * row.brightness, 0.5, 3.5))
    out = np.zeros(n)

    # Chord drone on the tonic triad (the third tells major from minor).
    root = 48 + key
    for interval in (0, scale[2], 7):
        out += 0.12 * _tone(_midi_hz(root + interval), t, tilt, "pad", t)

    # Melody: one note per beat, or per half beat when the track is dense.
    step = beat / 2 if row.density > 0.5 else beat
    for onset in np.arange(0, params.audio_seconds, step):
        degree = int(rng.integers(0, 7))
        midi = 60 + key + scale[degree] + 12 * int(rng.random() < 0.2)
        start, stop = int(onset * sr), min(n, int((onset + step) * sr))
        local = t[: stop - start]
        out[start:stop] += 0.35 * _tone(_midi_hz(midi), local, tilt, row.instrument, local)

    # Drums: a kick per beat, noise hats on a 16th grid with density-driven probability.
    p_hat = float(expit(1.6 * row.density))
    hat_len, kick_len = int(0.04 * sr), int(0.15 * sr)
    for k, onset in enumerate(np.arange(0, params.audio_seconds, beat / 4)):
        start = int(onset * sr)
        if k % 4 == 0 and start < n:
            m = min(kick_len, n - start)
            lt = t[:m]
            sweep = 2 * np.pi * (50 * lt + 70 * (1 - np.exp(-lt * 30)) / 30)
            out[start : start + m] += 0.5 * np.sin(sweep) * np.exp(-lt * 25)
        if rng.random() < p_hat and start < n:
            m = min(hat_len, n - start)
            noise = np.diff(rng.normal(0, 1, m + 1))  # first difference: a crude high-pass
            out[start : start + m] += 0.15 * noise * np.exp(-t[:m] * 90)
    out /= np.sqrt(np.mean(out**2)) + 1e-9
    return np.clip(0.15 * out, -0.99, 0.99).astype(np.float32)


def _midi_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _tone(f0: float, t: np.ndarray, tilt: float, instrument: str, env_t: np.ndarray) -> np.ndarray:
    """One note by wavetable (additive harmonics) or FM synthesis; the instrument sets harmonics and envelope.

    A one-period wavetable read at the note's phase costs O(samples) however many harmonics it holds,
    which keeps rendering a catalog well under a minute.
    """
    if instrument == "bell":
        env = np.exp(-env_t * 4.0)
        index = 2.0 * np.exp(-env_t * 3.0) * (3.5 - tilt)
        return env * np.sin(2 * np.pi * f0 * t + index * np.sin(2 * np.pi * 1.41 * f0 * t))
    phase = ((f0 * t) % 1.0 * _TABLE_SIZE).astype(np.int64)
    bright = _wavetable(f0, tilt, odd_only=instrument == "lead")[phase]
    if instrument == "pluck":
        # Upper harmonics die faster than the fundamental, as on a plucked string.
        dull = _wavetable(f0, 3.5, odd_only=False, max_harmonics=3)[phase]
        return bright * np.exp(-env_t * 9.0) + dull * np.exp(-env_t * 3.0)
    attack = np.minimum(1.0, env_t / (0.03 if instrument == "lead" else 0.15))
    return attack * bright


_TABLE_SIZE = 4096


def _wavetable(f0: float, tilt: float, odd_only: bool, max_harmonics: int = 24) -> np.ndarray:
    """One period of sum_h h^-tilt sin(h x), band-limited below 11 kHz."""
    harmonics = np.arange(1, int(min(max_harmonics, 11_000.0 // f0)) + 1)
    if odd_only:
        harmonics = harmonics[harmonics % 2 == 1]
    x = 2 * np.pi * np.arange(_TABLE_SIZE) / _TABLE_SIZE
    return (harmonics[:, None] ** -tilt * np.sin(np.outer(harmonics, x))).sum(0)


# ---- the loader: world + protocol + features + content -> DatasetSplits ------------------------------
USER_CAT, TRACK_CAT = ("country", "gender"), ("artist_id", "genre", "key", "mode", "language")
USER_NUM, TRACK_NUM = ("age", "n_plays", "n_tracks"), ("release_year", "popularity")
OPTIONS = ("size", "world_seed", "protocol", "missing", "encoder", "k", "token_layers", "progress")
_PROTOCOL_CACHE: dict[tuple, ProtocolSplits] = {}  # one split per (world, protocol) per process


def variant_of(
    size: str = "default",
    world_seed: int | None = None,
    protocol: ProtocolConfig | None = None,
    k: int = 32,
    token_layers: str = "all",
    **_ignored: object,
) -> str:
    """The result-table name of a (world, protocol, token) setting, e.g. 'default/random+cold20+tok-k16-last1'."""
    world = size if world_seed is None else f"{size}-w{world_seed}"
    return f"{world}/{(protocol or ProtocolConfig()).tag()}{token_tag(k, token_layers)}"


def feature_fields(features: str) -> list[FieldConfig]:
    """FieldConfigs of a TASTE feature setting: id, id+cat or id+cat+num."""
    return taste_fields("synthetic", features, USER_CAT, TRACK_CAT, USER_NUM, TRACK_NUM)


def load_synthetic(
    root: Path,
    features: str = "id+cat+num",
    content: str = "none",
    *,
    size: str = "default",
    world_seed: int | None = None,
    protocol: ProtocolConfig | None = None,
    missing: MissingPolicy = "error",
    encoder: str = "mfcc",
    k: int = 32,
    token_layers: str = "all",
    progress: bool = True,
) -> DatasetSplits:
    """The synthetic world under `root`, split by `protocol`, with the requested features and content."""
    fields = feature_fields(features)
    if content not in CONTENT_MODES:
        raise EncoreError(f"unknown content setting {content!r}; known: {', '.join(CONTENT_MODES)}")
    cfg = protocol or ProtocolConfig()
    world = load_world(world_params(size, world_seed), root, progress=progress)
    split_dir = world.folder / "splits" / cfg.hash()
    key = (str(world.folder), cfg)
    if key not in _PROTOCOL_CACHE:
        _PROTOCOL_CACHE[key] = apply_protocol(
            world.plays, cfg, split_dir, truth=world.generative_truth(cfg.label_threshold)
        )
    splits = _PROTOCOL_CACHE[key]

    # Statistics come from observed training rows only; items/users without any get NaN (-> OOV bucket).
    train_pos = splits.train_positives
    tracks = world.tracks[["track_id", *TRACK_CAT, "release_year"]].copy()
    tracks["popularity"] = tracks.track_id.map(train_pos.groupby("track_id").size()).astype(float)
    users = world.users[["user_id", *USER_CAT, "age"]].copy()
    users["n_plays"] = users.user_id.map(train_pos.groupby(USER)["num_repeat"].sum()).astype(float)
    users["n_tracks"] = users.user_id.map(train_pos.groupby(USER).size()).astype(float)

    files = {**world.files(), **splits.files}
    if content != "none":
        folder = content_dir(world, encoder)
        if not (folder / "manifest.json").is_file():
            extract_world_audio(world, encoder, folder, progress=progress)
        arrays = ContentArrays.from_catalog(folder)
        books_dir = split_dir / codebooks_dirname(encoder, k, token_layers)
        item_content = build_item_content(
            arrays, content, world.tracks.track_id.to_numpy(), splits.train_items,
            missing=missing, k=k, seed=cfg.seed, out_dir=books_dir if content == "tokens" else None,
            token_layers=token_layers,
        )  # fmt: skip
        tracks = tracks.merge(item_content.table, on="track_id", how="left")
        fields += item_content.fields
        files[str(folder / "content.npz")] = arrays.sha256

    run_files = {"codebooks": split_dir / codebooks_dirname(encoder, k, token_layers)} if content == "tokens" else {}
    return joined_dataset(
        "synthetic", splits, users, tracks, fields, features=features, content=content, files=files,
        variant=variant_of(size, world_seed, cfg, k, token_layers), run_files=run_files,
    )  # fmt: skip


def content_dir(world: World, encoder: str) -> Path:
    return world.folder / "content" / encoder


def extract_world_audio(world: World, encoder: str, out_dir: Path | None = None, progress: bool = True) -> Path:
    """Encode every track's audio with `encoder` (resumable); returns the folder holding content.npz."""
    from encore.audio import extract_catalog, get_encoder

    out_dir = out_dir or content_dir(world, encoder)
    extract_catalog(world.audio_paths(), get_encoder(encoder), out_dir, progress=progress)
    return out_dir


def recall_source(
    root: Path, content: Sequence[str], protocol: ProtocolConfig, options: dict, progress: bool
) -> RecallSource:
    """`--task recall`: the world's plays split by `protocol`, with the audio vectors as content `dense`."""
    for setting in content:
        if setting != "dense":
            raise EncoreError(f"recall on synthetic takes --content dense (the audio vectors), not {setting!r}")
    world = load_world(world_params(options.get("size", "default"), options.get("world_seed")), root, progress=progress)
    splits = apply_protocol(world.plays, protocol, None)
    encoder = options.get("encoder", "mfcc")
    modalities = []
    for _ in content:
        folder = content_dir(world, encoder)
        if not (folder / "manifest.json").is_file():
            extract_world_audio(world, encoder, folder, progress=progress)
        modalities.append(("audio", ContentArrays.from_catalog(folder)))
    items = world.tracks.track_id.to_numpy()
    return RecallSource(world.plays, splits, items, modalities, options.get("missing", "error"))


DATASET = Dataset(
    "synthetic",
    load_synthetic,
    options=OPTIONS,
    content_settings=CONTENT_MODES,
    variant_of=variant_of,
    data_root=default_root,
    recall=recall_source,
    recall_content="dense",
)
