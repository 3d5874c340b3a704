"""The exact oracle against an end-to-end simulation on the default world's real users.

    PYTHONPATH=. .venv/bin/python benchmarks/oracle_world_check.py [--users 8] [--reps 6000]

For a few users of the test and cold sets (seeded pick), `monte_carlo_scores` redraws the user's plays from the
world's own exposure weights, splits and draws negatives as the protocol does, over the realized pools; each
eval row's exact score is compared with the simulated one in standard errors. Prints one line per user and the
mean and RMS of z over all rows (about 0 and 1 when the exact oracle is right).
"""

from __future__ import annotations

import argparse

import numpy as np

from training.datasets.oracle import monte_carlo_scores
from training.datasets.protocol import ProtocolConfig, apply_protocol, kcore
from training.datasets.synthetic import load_world, world_params


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=8, help="users per set")
    p.add_argument("--reps", type=int, default=6000, help="simulated replicates per user")
    args = p.parse_args()
    world = load_world(world_params("default"), progress=False)
    cfg = ProtocolConfig(cold_share=0.2)
    truth = world.generative_truth(cfg.label_threshold)
    splits = apply_protocol(world.plays, cfg, world.folder / "splits" / cfg.hash(), truth=truth)
    n_items = len(world.tracks)
    pools = {name: np.zeros(n_items, dtype=bool) for name in ("test", "cold")}
    pools["cold"][splits.cold_items] = True
    kept = kcore(world.plays.drop_duplicates(["user_id", "track_id"]).reset_index(drop=True), cfg.kcore)
    pools["test"][np.setdiff1d(kept.track_id.unique(), splits.cold_items)] = True  # the protocol's warm items
    rng = np.random.default_rng(0)
    zs = []
    for name, share in (("test", cfg.test_share), ("cold", None)):
        frame = splits.evals[name]
        for user in rng.choice(frame.user_id.unique(), args.users, replace=False):
            rows = frame[frame.user_id == user].drop_duplicates("track_id")
            p_label = truth.p_label(np.full(n_items, user), np.arange(n_items))
            sim, se = monte_carlo_scores(
                truth.weights(np.array([user]))[0], int(truth.n_draws[user]), pools[name], p_label, share,
                cfg.negatives, args.reps, int(user),
            )  # fmt: skip
            items = rows.track_id.to_numpy()
            ok = se[items] > 0  # an item never simulated as a row has no standard error
            z = (rows.oracle.to_numpy()[ok] - sim[items][ok]) / se[items][ok]
            zs += list(z)
            print(f"{name} user {user}: n={int(truth.n_draws[user])} rows={len(items)} max|z|={np.abs(z).max():.2f}")
    zs = np.array(zs)
    print(f"{len(zs)} rows: mean z {zs.mean():+.3f}, rms z {np.sqrt((zs**2).mean()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
