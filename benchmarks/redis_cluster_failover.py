"""The online store on a real Redis Cluster (issue 23): memory per track and per user, bulk write and read
rates through encore.store (Feast, redis_type: redis_cluster; the same writes and reads on one plain
redis-server beside them), and the failover time when a master dies.

    .venv/bin/python -m benchmarks.redis_cluster_failover --tracks 20000 --users 20000 --kills 3 \
        --out docs/results/redis_cluster

Each kill starts a fresh 3-master/3-replica cluster of local redis-server processes (tests/redis_cluster.py,
free local ports, cluster-node-timeout 1 s), fills it, runs two reader threads (Store.get_users of 100 users
at a time, cycling through all), SIGKILLs the master holding the most keys and records: the time until a replica
is promoted (3 masters, cluster_state:ok), the time until the first complete read succeeds afterwards, and
how many reads failed meanwhile. Writes results.json and results.md under --out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.io import write_json_atomic
from encore.store import Store, StoreSettings, redis_client
from tests.redis_cluster import NODE_TIMEOUT_MS, LocalCluster

EMBEDDING_DIM = 64
N_LAYERS = 8


def frames(n_tracks: int, n_users: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Users, track meta and track content shaped like the serving world (64-d content, 8 token fields)."""
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({
        fn.USER_ID: [f"u{i}" for i in range(n_users)], "country": "SE", "age": rng.integers(15, 70, n_users),
        "gender": "f", "n_plays": rng.integers(1, 5000, n_users), "n_tracks": rng.integers(1, 500, n_users),
    })  # fmt: skip
    ids = [f"t{i}" for i in range(n_tracks)]
    meta = pd.DataFrame({
        fn.TRACK_ID: ids, "artist_id": [f"a{i % 5000}" for i in range(n_tracks)], "genre": "rock",
        "key": rng.integers(0, 12, n_tracks), "mode": rng.integers(0, 2, n_tracks), "language": "en",
        "release_year": rng.integers(1960, 2026, n_tracks), "popularity": rng.random(n_tracks).astype(np.float32),
    })  # fmt: skip
    content = pd.DataFrame({
        fn.TRACK_ID: ids, "embedding": list(rng.standard_normal((n_tracks, EMBEDDING_DIM)).astype(np.float32)),
        "tokens": list(rng.integers(0, 32, (n_tracks, N_LAYERS))), "encoder": "musicnn",
        "encoder_revision": "musicnn-msd+kmeans32-bench", "typicality": 0.5, "tags": "rock,guitar",
    })  # fmt: skip
    return users, meta, content


def used_memory(cluster: LocalCluster) -> int:
    import redis

    return sum(int(redis.Redis(port=p).info("memory")["used_memory"]) for p in cluster.masters())


def single_redis(n_tracks: int, n_users: int, folder: Path) -> dict:
    """The same writes and reads on one plain redis-server (ENCORE_FEAST_ONLINE=redis), side by side."""
    import subprocess

    import redis

    from tests.conftest import free_port

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        store = Store(StoreSettings(folder / "feast-single", "bench", "redis", f"redis://127.0.0.1:{port}/0"))
        store.apply()
        users, meta, content = frames(n_tracks, n_users)
        base = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        store.materialize_frames(None, meta, content)
        write_s = time.perf_counter() - t0
        per_track = (int(client.info("memory")["used_memory"]) - base) / n_tracks
        t0 = time.perf_counter()
        assert len(store.get_tracks(meta[fn.TRACK_ID])) == n_tracks
        read_s = time.perf_counter() - t0
        return {"bytes_per_track": per_track, "write_tracks_per_s": n_tracks / write_s,
                "read_tracks_per_s": n_tracks / read_s}  # fmt: skip
    finally:
        server.kill()
        server.wait(timeout=10)


def one_kill(n_tracks: int, n_users: int, folder: Path) -> dict:
    cluster = LocalCluster(folder / "cluster").start()
    try:
        settings = StoreSettings(folder / "feast", "bench", "redis_cluster", cluster.url)
        store = Store(settings)
        store.apply()
        users, meta, content = frames(n_tracks, n_users)
        base = used_memory(cluster)
        t0 = time.perf_counter()
        store.materialize_frames(None, meta, content)
        write_tracks_s = time.perf_counter() - t0
        after_tracks = used_memory(cluster)
        t0 = time.perf_counter()
        store.materialize_frames(users, None, None)
        write_users_s = time.perf_counter() - t0
        after_users = used_memory(cluster)
        t0 = time.perf_counter()
        got = store.get_tracks(meta[fn.TRACK_ID])
        read_tracks_s = time.perf_counter() - t0
        assert len(got) == n_tracks

        keys = cluster.keys_per_master()
        victim = max(keys, key=keys.get)
        user_ids = users[fn.USER_ID].tolist()
        outcomes: list[tuple[float, bool]] = []
        stop = threading.Event()

        def reader(offset: int) -> None:  # 100 users a read: about a third live on any one master
            reader_store = Store(settings)
            i = offset
            while not stop.is_set():
                batch = user_ids[i % n_users : i % n_users + 100]
                i += 100 * len(threads)
                try:
                    ok = len(reader_store.get_users(batch)) == len(batch)
                except Exception:  # noqa: BLE001 - a failed read is what is counted here
                    ok = False
                outcomes.append((time.monotonic(), ok))

        threads = [threading.Thread(target=reader, args=(100 * k,), daemon=True) for k in range(2)]
        for thread in threads:
            thread.start()
        while len(outcomes) < 4:
            time.sleep(0.05)
        killed_at = time.monotonic()
        cluster.kill(victim)
        while not cluster.healthy():
            assert time.monotonic() - killed_at < 120, "no failover within 120 s"
            time.sleep(0.02)
        promoted_s = time.monotonic() - killed_at
        while not any(t > killed_at + promoted_s and ok for t, ok in outcomes):
            assert time.monotonic() - killed_at < 180, "reads did not recover within 180 s"
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        after = [(t, ok) for t, ok in outcomes if t > killed_at]
        first_ok = next(t for t, ok in after if ok and t > killed_at + promoted_s) - killed_at
        assert redis_client(settings, connect_timeout_s=2, timeout_s=5).ping()
        return {
            "bytes_per_track": (after_tracks - base) / n_tracks,
            "bytes_per_user": (after_users - after_tracks) / n_users,
            "write_tracks_per_s": n_tracks / write_tracks_s,
            "write_users_per_s": n_users / write_users_s,
            "read_tracks_per_s": n_tracks / read_tracks_s,
            "promoted_s": promoted_s,
            "first_full_read_after_kill_s": first_ok,
            "failed_reads": sum(1 for _, ok in after if not ok),
            "reads_after_kill": len(after),
        }
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracks", type=int, default=20000)
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("docs/results/redis_cluster"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="encore-single-bench-") as folder:
        single = single_redis(args.tracks, args.users, Path(folder))
    print(f"single redis: {single}", file=sys.stderr)
    runs = []
    for i in range(args.kills):
        with tempfile.TemporaryDirectory(prefix="encore-cluster-bench-") as folder:
            runs.append(one_kill(args.tracks, args.users, Path(folder)))
        print(f"run {i + 1}: {runs[-1]}", file=sys.stderr)
    result = {"tracks": args.tracks, "users": args.users, "node_timeout_ms": NODE_TIMEOUT_MS, "runs": runs,
              "single_redis": single}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", result)
    keys = ["bytes_per_track", "bytes_per_user", "write_tracks_per_s", "write_users_per_s", "read_tracks_per_s",
            "promoted_s", "first_full_read_after_kill_s", "failed_reads"]  # fmt: skip
    lines = ["| measure | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median |",
             "|---|" + "---|" * (len(runs) + 1)]  # fmt: skip
    for key in keys:
        values = [r[key] for r in runs]
        lines.append(f"| {key} | " + " | ".join(f"{v:,.2f}" for v in values) + f" | {np.median(values):,.2f} |")
    lines.append("")
    shown = "; ".join(f"{k} {v:,.2f}" for k, v in single.items())
    lines.append(f"One plain redis-server, same frames: {shown}.")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
