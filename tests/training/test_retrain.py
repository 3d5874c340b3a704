"""`python -m training.retrain` on a real store: the quick world bootstrapped into a SQLite Feast store in a tmp folder,
an upload pushed, a stretch of listening drawn from the world's true preferences written through EventLog (the
embedder's ingest), then retrains that promote, refuse, roll back and lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore import track_layers
from encore.artifacts import current_bundle_path, load_bundle
from encore.audio.content import ContentComponent
from encore.events import Event, EventLog
from encore.io import sha256_file
from encore.job_lock import job_lock
from encore.retriever_bundle import RetrieverComponent
from encore.settings import EncoreSettings
from encore.store import Store
from tests.conftest import REPO_ROOT
from training import retrain

pytestmark = pytest.mark.slow

UPLOAD = "upload-0001"
NEW_LISTENERS = ("new-listener-a", "new-listener-b")


@dataclass
class RetrainWorld:
    root: Path  # the artifacts folder
    store: Store
    world: object
    bootstrap_id: str


def _push_upload(store: Store) -> None:
    """A track uploaded after the bootstrap (content only, as the embedder pushes a track without metadata)."""
    content = store.read_offline(fn.TRACK_CONTENT).iloc[0]
    store.push_track(UPLOAD, None, {name: content[name] for name in fn.TRACK_CONTENT_FIELDS})


def _listening(world, tracks: list[str], since: float, n_users: int = 60, per_user: int = 30) -> list[Event]:
    """Events of `n_users` world listeners (plus two new ones) on random tracks: a play when the world's true
    preference says so (P(label) of training.datasets.synthetic), else a skip; interleaved in time since `since`."""
    rng = np.random.default_rng(7)
    users = rng.choice(len(world.users), n_users, replace=False)
    pairs = [(int(u), tracks[int(t)]) for u in users for t in rng.choice(len(tracks), per_user, replace=False)]
    catalog = [(u, t) for u, t in pairs if t != UPLOAD]
    p_label, _ = world.truth(np.array([u for u, _ in catalog]), np.array([int(t) for _, t in catalog]), 2)
    liked = dict(zip(catalog, rng.random(len(catalog)) < p_label, strict=True))
    rows = [(str(u), t, liked.get((u, t), True)) for u, t in pairs]  # every listener of the upload likes it
    rows += [(user, t, True) for user in NEW_LISTENERS for t in tracks[:8]]
    order = rng.permutation(len(rows))
    span = time.time() - since - 0.01
    return [
        Event(f"ev{i}", rows[j][0], rows[j][1], "play" if rows[j][2] else "skip", 120_000 if rows[j][2] else 4_000,
              datetime.fromtimestamp(since + 0.001 + span * i / len(rows), UTC))
        for i, j in enumerate(order)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def world(retrain_world) -> Iterator[RetrainWorld]:
    """The session's retrain world (tests/early_worlds.py: the quick world in SQLite), an upload and a stretch of
    listening written into it."""
    base, bootstrap_id = retrain_world.base, retrain_world.info["bundle_id"]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in retrain_world.env.items():
            if name.startswith("ENCORE_"):
                patch.setenv(name, value)
        from training.datasets.synthetic import load_world, world_params

        quick = load_world(world_params("quick"), progress=False)
        store = Store(EncoreSettings().store())
        _push_upload(store)
        since = store.read_offline(fn.TRACK_CONTENT)[fn.EVENT_TIMESTAMP].max().timestamp()
        tracks = [*quick.tracks[fn.TRACK_ID].astype(str), UPLOAD]
        log = EventLog(store)
        events = _listening(quick, tracks, since)
        for start in range(0, len(events), 1000):
            log.ingest(events[start : start + 1000], lambda ids: set(ids) & set(tracks))
        log.close()
        yield RetrainWorld(base / "artifacts", store, quick, bootstrap_id)


def _report(root: Path, bundle_id: str) -> dict:
    return json.loads((root / retrain.REPORTS / f"{bundle_id}.json").read_text())


def test_a_planted_future_value_never_leaks_into_the_training_frame(world: RetrainWorld) -> None:
    events = retrain.labelled_events(world.store)
    user = events[fn.USER_ID].iloc[0]
    mine = events[events[fn.USER_ID] == user].sort_values(fn.EVENT_TIMESTAMP)
    first, last = mine.iloc[0], mine.iloc[-1]
    profile = world.store.read_offline(fn.USER_PROFILE).set_index(fn.USER_ID).loc[user]
    planted = pd.DataFrame(
        [{fn.USER_ID: user, **{n: profile[n] for n in fn.USER_PROFILE_FIELDS}, "country": country,
          fn.EVENT_TIMESTAMP: when, fn.CREATED_TIMESTAMP: when}
         for country, when in (("PAST", first[fn.EVENT_TIMESTAMP] - pd.Timedelta(seconds=1)),
                               ("SAME_TIME", first[fn.EVENT_TIMESTAMP]),
                               ("FUTURE", last[fn.EVENT_TIMESTAMP] + pd.Timedelta(microseconds=1)))]
    )  # fmt: skip
    for i in range(len(planted)):  # one row per entity per part
        world.store.materialize_frames(planted.iloc[[i]], None, None, append=True)

    joined = retrain.point_in_time(world.store, mine.iloc[[0, -1]])
    # Feast's join is inclusive; ours is strict: a value stamped at the event's own time is for the next event
    assert joined["country"].tolist() == ["PAST", "SAME_TIME"]
    assert joined[fn.EVENT_TIMESTAMP].tolist() == [first[fn.EVENT_TIMESTAMP], last[fn.EVENT_TIMESTAMP]]
    fields = retrain.boot.ranker_fields(8, 4)
    frame = retrain.ranker_rows(joined, fields)  # the ranker's frame keeps each row's own value
    assert frame["country"].tolist() == ["PAST", "SAME_TIME"] and frame[fn.USER_ID].tolist() == [user, user]


def test_a_worse_candidate_is_not_promoted_and_the_report_says_why(world: RetrainWorld) -> None:
    argv = ["--epochs", "0", "--recall-epochs", "1", "--bundle-id", "retrain-untrained", "--quiet"]
    assert retrain.main(argv) == retrain.EXIT_NOT_PROMOTED
    assert current_bundle_path(world.root).name == world.bootstrap_id
    report = _report(world.root, "retrain-untrained")
    assert not report["promoted"] and not report["forced"]
    assert report["reason"].startswith("not promoted: gauc difference") and "below the margin" in report["reason"]
    evaluation = report["evaluation"]
    assert evaluation["candidate"] < evaluation["serving"] and evaluation["low"] < -report["margin"]
    assert evaluation["users"] >= 20 and report["new_tracks"] == 1
    negatives = world.root / retrain.REPORTS / report["window"]["negatives"]
    assert sha256_file(negatives) == report["window"]["sha256"]
    markdown = (world.root / retrain.REPORTS / "retrain-untrained.md").read_text()
    assert "**Not promoted.**" in markdown and "Liking, reported only" in markdown
    liking = evaluation["liking"]  # plays against skips alone: its own listeners and GAUCs, beside the verdict
    assert 10 <= liking["users"] <= evaluation["users"] and liking["serving"] != evaluation["serving"]
    load_bundle(world.root / "retrain-untrained")  # written whole, just not CURRENT


def test_a_promoted_retrain_knows_uploads_and_new_listeners_and_rolls_back(world: RetrainWorld) -> None:
    argv = ["--epochs", "1", "--recall-epochs", "2", "--bundle-id", "retrain-forced", "--force", "--quiet"]
    assert retrain.main(argv) == retrain.EXIT_PROMOTED
    assert current_bundle_path(world.root).name == "retrain-forced"
    report = _report(world.root, "retrain-forced")
    assert report["promoted"] and report["serving"] == world.bootstrap_id
    bootstrap_version = ContentComponent.read(load_bundle(world.root / world.bootstrap_id)).version
    kept = {"refit": False, "version": bootstrap_version, "serving_version": bootstrap_version}
    assert report["codebooks"] == kept | {"stored_retokenized": 0}  # nothing to re-tokenize at promotion
    assert ContentComponent.read(load_bundle(world.root / "retrain-forced")).version == bootstrap_version  # kept
    assert "Codebooks: kept" in (world.root / retrain.REPORTS / "retrain-forced.md").read_text()
    first = _report(world.root, "retrain-untrained")["window"]
    assert report["window"] == first  # the same window meets the same frozen negatives
    retriever = RetrieverComponent.read(load_bundle(world.root / "retrain-forced"))
    assert UPLOAD in set(retriever.item_ids) and set(NEW_LISTENERS) <= set(retriever.user_ids)  # now warm
    before = RetrieverComponent.read(load_bundle(world.root / world.bootstrap_id))
    assert UPLOAD not in set(before.item_ids)

    assert retrain.main(["--rollback"]) == retrain.EXIT_PROMOTED
    assert current_bundle_path(world.root).name == world.bootstrap_id
    assert retrain.main(["--rollback"]) == retrain.EXIT_PROMOTED  # and a second rollback undoes the first
    assert current_bundle_path(world.root).name == "retrain-forced"


def test_bootstrap_and_retrain_bundles_carry_an_int8_ranker_checked_on_the_test_rows(world: RetrainWorld) -> None:
    assert retrain.main(["--epochs", "1", "--recall-epochs", "2", "--bundle-id", "retrain-int8", "--quiet"]) in (
        retrain.EXIT_PROMOTED,
        retrain.EXIT_NOT_PROMOTED,
    )
    for bundle_id in (world.bootstrap_id, "retrain-int8"):
        bundle = load_bundle(world.root / bundle_id)  # both graphs pass the bundle checks
        entry = bundle.components["ranker"]
        check = entry["int8"]
        assert entry["onnx_int8"] == "ranker/model.int8.onnx" and check["written"] is True, check
        assert check["eval"] == "test" and check["rows"] > 0 and check["auc_drop"] <= 0.001
        assert check["auc_fp32"] == pytest.approx(entry["metrics"]["test"]["auc"], abs=1e-4)  # the metrics' rows


def test_a_second_retrain_is_refused_while_one_holds_the_lock(world: RetrainWorld) -> None:
    current = current_bundle_path(world.root).name
    with retrain.retrain_lock(world.root):
        assert retrain.main(["--epochs", "1", "--force", "--bundle-id", "retrain-second"]) == retrain.EXIT_LOCKED
        assert retrain.main(["--rollback"]) == retrain.EXIT_LOCKED
        other = subprocess.run([sys.executable, "-m", "training.retrain", "--rollback"], cwd=REPO_ROOT,
                               env=dict(os.environ), capture_output=True, text=True)  # fmt: skip
        assert other.returncode == retrain.EXIT_LOCKED and "another retrain holds" in other.stderr  # another process
    assert current_bundle_path(world.root).name == current
    assert not (world.root / "retrain-second").exists()


def test_a_retrain_on_another_node_holds_the_stores_lock(world: RetrainWorld) -> None:
    """Another node (its own artifacts folder, so no shared flock) sharing the store holds the store's lock."""
    current = current_bundle_path(world.root).name
    with job_lock(Store(world.store.settings), "retrain"):
        assert retrain.main(["--rollback"]) == retrain.EXIT_LOCKED
    assert current_bundle_path(world.root).name == current


def test_a_candidate_with_recent_event_features_trains_and_is_judged_with_them(world: RetrainWorld) -> None:
    from encore.ranker_bundle import RankerComponent
    from encore.ranker_frame import ACTIVITY_COLUMNS

    current = current_bundle_path(world.root).name
    argv = ["--epochs", "1", "--recall-epochs", "1", "--bundle-id", "retrain-activity", "--activity-features"]
    argv.append("--quiet")
    assert retrain.main(argv) in (retrain.EXIT_PROMOTED, retrain.EXIT_NOT_PROMOTED)
    spec = RankerComponent.read(load_bundle(world.root / "retrain-activity")).spec
    assert set(ACTIVITY_COLUMNS) <= {f.column for f in spec.fields}
    assert 0 <= _report(world.root, "retrain-activity")["evaluation"]["candidate"] <= 1
    events = retrain.labelled_events(world.store)
    joined = retrain.point_in_time(world.store, events.tail(50))
    assert (joined["n_play"] + joined["n_skip"] > 0).all()  # late events: their listeners have earlier ones
    if current_bundle_path(world.root).name != current:
        retrain.main(["--rollback"])


def test_a_candidate_with_content_affinity_trains_loads_and_serves_it(world: RetrainWorld) -> None:
    """--affinity-feature: the candidate's spec carries content_affinity; the bundle loads (its smoke test scores
    through it) and serves a listener with events, the cached path and the full path giving the same scores."""
    from encore.ranker_bundle import RankerComponent
    from encore.ranker_frame import CONTENT_AFFINITY, TrackFeatures, build_frame, uses_activity
    from encore.track_table import TrackTable
    from services.ranker.bundle import load_ranker_model
    from services.ranker.encoded_items import ItemInputCache
    from services.ranker.pipeline import Recent, Score

    current = current_bundle_path(world.root).name
    argv = ["--epochs", "1", "--recall-epochs", "1", "--bundle-id", "retrain-affinity", "--affinity-feature", "--quiet"]
    assert retrain.main(argv) in (retrain.EXIT_PROMOTED, retrain.EXIT_NOT_PROMOTED)
    spec = RankerComponent.read(load_bundle(world.root / "retrain-affinity")).spec
    assert CONTENT_AFFINITY in {f.column for f in spec.fields} and uses_activity(spec)
    assert 0 <= _report(world.root, "retrain-affinity")["evaluation"]["candidate"] <= 1

    model = load_ranker_model(load_bundle(world.root / "retrain-affinity"))
    events = retrain.labelled_events(world.store)
    user = str(events[events.label == 1][fn.USER_ID].iloc[-1])
    ids = world.store.read_offline(fn.TRACK_CONTENT)[fn.TRACK_ID].astype(str).tolist()[:40]
    row = Store(world.store.settings).get_activity([user])[user]
    # This world's events went in without the embedder's vectors (EventLog(store)), so its online rows hold no
    # profile: the one a request now would read is the training side's as of now (equal to the online one when
    # ingest folds the vectors: tests/training/test_affinity_skew.py).
    now = pd.DataFrame({fn.USER_ID: [user], fn.TRACK_ID: [ids[0]], "label": 1,
                        fn.EVENT_TIMESTAMP: [pd.Timestamp.now(tz="UTC")]})  # fmt: skip
    profile = retrain.point_in_time(world.store, now).iloc[0]
    assert profile["profile_n"] > 0
    row |= {"profile": profile["profile"].tolist(), "profile_n": int(profile["profile_n"])}
    mapping = Recent.from_row(row).user_row(world.store.get_users([user]).get(user))
    table = TrackTable(Store(world.store.settings))
    table.load(ids)
    items = TrackFeatures.align(ids, np.ones(len(ids), bool), table.lookup(ids), table)
    cached = Score(ItemInputCache())
    cached.prepare(model.spec, table)
    served = cached(model, user, mapping, items)
    full = Score(None)(model, user, mapping, items)
    assert np.isfinite(served).all() and served.tobytes() == full.tobytes()
    assert build_frame(model.spec, user, mapping, items)[CONTENT_AFFINITY].nunique() > 1  # per candidate
    frame = retrain.ranker_rows(retrain.point_in_time(world.store, events.tail(50)), list(spec.fields))
    assert (frame[CONTENT_AFFINITY] != 0).any()  # late events: their listeners have a profile by then
    if current_bundle_path(world.root).name != current:
        retrain.main(["--rollback"])


def _served(store: Store, ids: list[str]) -> dict[str, dict]:
    """What the online store serves for `ids` (tokens and revision), read fresh."""
    rows = Store(store.settings).get_tracks(ids, views=[fn.TRACK_CONTENT])
    return {t: {"tokens": list(rows[t]["tokens"]), "encoder_revision": rows[t]["encoder_revision"]} for t in ids}


def _ranker_sees_content(bundle: Path, store: Store, ids: list[str]) -> list[bool]:
    """Which of `ids` the bundle's ranker scores with their stored content (the rest: without audio)."""
    from encore.ranker_frame import TrackFeatures
    from encore.track_table import TrackTable
    from services.ranker.bundle import load_ranker_model

    table = TrackTable(Store(store.settings))
    table.load(ids)
    batch = table.lookup(ids)
    items = TrackFeatures.align(ids, np.ones(len(ids), bool), batch, table)
    return load_ranker_model(load_bundle(bundle)).own_content(items).valid[fn.TRACK_CONTENT].tolist()


def test_a_refit_retokenizes_every_stored_track_and_a_rollback_restores_the_old_tokens(
    world: RetrainWorld, capsys: pytest.CaptureFixture
) -> None:
    from encore.audio import load_catalog

    serving_path = current_bundle_path(world.root)
    serving = ContentComponent.read(load_bundle(serving_path))
    argv = ["--epochs", "1", "--recall-epochs", "1", "--bundle-id", "retrain-refit", "--refit-codebooks", "--force"]
    argv.append("--quiet")
    # The upload was pushed without its pooled layers (as before the embedder kept them): nothing to re-tokenize.
    assert retrain.main(argv) == retrain.EXIT_ERROR
    error = capsys.readouterr().err
    assert UPLOAD in error and "cannot be re-tokenized" in error.strip().splitlines()[-1]
    assert not (world.root / "retrain-refit").exists() and current_bundle_path(world.root) == serving_path

    ids, layers, _ = load_catalog(world.world.folder / f"content-{serving.encoder}")
    source = str(world.store.read_offline(fn.TRACK_CONTENT).iloc[0][fn.TRACK_ID])  # the upload's copied content
    info = serving.codebooks.encoder_info
    track_layers.write(world.store.settings.data_dir, UPLOAD, layers[ids.index(source)], info["backend"],
                       info["revision"])  # fmt: skip  # as the embedder keeps an upload's layers
    assert retrain.main(argv) == retrain.EXIT_PROMOTED
    refit = ContentComponent.read(load_bundle(world.root / "retrain-refit"))
    report = _report(world.root, "retrain-refit")["codebooks"]
    assert report["refit"] and report["version"] == refit.version != serving.version == report["serving_version"]
    stored = world.store.read_offline(fn.TRACK_CONTENT)
    assert report["retokenized"] == report["stored_retokenized"] == len(stored) == len(ids) + 1
    assert not refit.foreign(stored["encoder_revision"].to_numpy()).any()  # every stored track: the new version
    layers_of = {UPLOAD: layers[ids.index(source)], ids[5]: layers[5]}
    served = _served(world.store, list(layers_of))
    for track, vector in layers_of.items():  # what is served is the track's layers tokenized by the new codebooks
        assert served[track]["tokens"] == refit.codebooks.tokenize(vector)[0].tolist()
        assert served[track]["encoder_revision"].endswith(f"+cb.{refit.version}")
    assert any(served[t]["tokens"] != serving.codebooks.tokenize(v)[0].tolist() for t, v in layers_of.items())
    # a ranker trained on the old codebooks scores these rows without audio, the refit's with it
    assert _ranker_sees_content(serving_path, world.store, list(layers_of)) == [False, False]
    assert _ranker_sees_content(world.root / "retrain-refit", world.store, list(layers_of)) == [True, True]

    assert retrain.main(["--rollback"]) == retrain.EXIT_PROMOTED  # the old bundle, and its tokens, again
    assert current_bundle_path(world.root) == serving_path
    served = _served(world.store, list(layers_of))
    for track, vector in layers_of.items():
        assert served[track]["tokens"] == serving.codebooks.tokenize(vector)[0].tolist()
        assert served[track]["encoder_revision"].endswith(f"+cb.{serving.version}")
    assert _ranker_sees_content(serving_path, world.store, list(layers_of)) == [True, True]


def test_a_store_filled_without_the_history_or_catalog_layers_is_filled_again(world: RetrainWorld) -> None:
    from encore.events import HISTORY_PART
    from training import bootstrap

    parts = (world.store.settings.offline_dir / fn.EVENTS / HISTORY_PART,
             track_layers.folder_of(world.store.settings.data_dir) / track_layers.CATALOG_PART)  # fmt: skip
    assert bootstrap.store_is_filled(world.bootstrap_id)
    for part in parts:  # as a store filled before the bootstrap logged them
        kept = part.read_bytes()
        part.unlink()
        assert not bootstrap.store_is_filled(world.bootstrap_id)  # the next bootstrap fills it again
        part.write_bytes(kept)
    before = EventLog(world.store).read()
    bootstrap.log_history(world.store, world.bootstrap_id)  # again: replaced whole, nothing doubled
    after = EventLog(world.store).read()
    assert bootstrap.store_is_filled(world.bootstrap_id) and len(after) == len(before)
    assert sorted(world.store.settings.offline_dir.joinpath(fn.EVENTS).glob("history*")) == [parts[0]]


def test_a_retrain_trains_on_the_bootstraps_history_from_the_store_with_the_world_gone(
    world: RetrainWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The world's folder out of reach (ENCORE_CACHE_DIR an empty folder, where the world would be looked for, or
    made again): a retrain and a refit retrain train on the bootstrap's plays as the offline event log holds them,
    and the refit, its promotion and the rollback re-tokenize from the layers the store keeps."""
    from training.datasets.protocol import ProtocolConfig, apply_protocol

    splits = apply_protocol(world.world.plays, ProtocolConfig(), out_dir=None)  # what the bootstrap trained on
    expected = {"train": len(splits.train_positives), "valid": len(splits.evals["valid"]) // 2,
                "test": len(splits.evals["test"]) // 2}  # fmt: skip  # eval sets: one negative per observed row
    history = EventLog(world.store).read()
    assert history[fn.EVENT_ID].str.startswith("_history:").sum() == sum(expected.values())
    serving_path = current_bundle_path(world.root)
    serving = ContentComponent.read(load_bundle(serving_path))
    kept = track_layers.read(world.store.settings.data_dir).set_index(fn.TRACK_ID)  # the catalog's, as bootstrapped
    source = str(world.store.read_offline(fn.TRACK_CONTENT).iloc[0][fn.TRACK_ID])  # the upload's copied content
    info = serving.codebooks.encoder_info
    track_layers.write(world.store.settings.data_dir, UPLOAD, kept.loc[source, "layers"], info["backend"],
                       info["revision"])  # fmt: skip  # as the embedder keeps an upload's layers
    nothing = tmp_path / "no-world"
    nothing.mkdir()
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(nothing))

    argv = ["--epochs", "1", "--recall-epochs", "1", "--bundle-id", "retrain-store-only", "--quiet"]
    assert retrain.main(argv) in (retrain.EXIT_PROMOTED, retrain.EXIT_NOT_PROMOTED)
    report = _report(world.root, "retrain-store-only")
    assert report["history"] == expected and report["train_events"] > 0
    if current_bundle_path(world.root) != serving_path:
        assert retrain.main(["--rollback"]) == retrain.EXIT_PROMOTED

    argv = ["--epochs", "1", "--recall-epochs", "1", "--bundle-id", "retrain-store-only-refit", "--refit-codebooks"]
    assert retrain.main([*argv, "--force", "--quiet"]) == retrain.EXIT_PROMOTED
    report = _report(world.root, "retrain-store-only-refit")
    stored = world.store.read_offline(fn.TRACK_CONTENT)
    assert report["history"] == expected and report["codebooks"]["refit"]
    assert report["codebooks"]["retokenized"] == report["codebooks"]["stored_retokenized"] == len(stored)
    assert retrain.main(["--rollback"]) == retrain.EXIT_PROMOTED  # re-tokenized back, from the store's layers
    assert current_bundle_path(world.root) == serving_path
    assert not any(nothing.iterdir())  # no world looked for, or made again
