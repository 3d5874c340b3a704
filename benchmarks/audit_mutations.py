"""Issue 24's audit mutations: apply each to the source, run the test that guards it, restore the file.

    PYTHONPATH=. .venv/bin/python benchmarks/audit_mutations.py [NAME ...]

Prints CAUGHT / NOT CAUGHT per mutation with the failing assertion. The source file is restored in a
`finally`, so an interrupted run leaves the tree as it was (check `git status` anyway).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARDS = "tests/training/test_guarantees.py"
ODDS = "odds = p_played * np.maximum(free, 1) / (n_neg * n_user_rows.reindex(users).to_numpy())"
SCORE = "return odds / (1 + odds) * p_label"
# name -> (file, original text, mutated text, -k selector of the guarding test)
MUTATIONS = {
    "early-stop-on-test": (
        "training/cell.py",
        'fit(model, dist.shard(encoded.train), encoded.evals["valid"], cell.train, resample, dist, on_epoch)',
        'fit(model, dist.shard(encoded.train), encoded.evals["test"], cell.train, resample, dist, on_epoch)',
        "test_the_best_epoch",
    ),
    "spec-fit-on-all-splits": (
        "training/cell.py",
        "spec = FeatureSpec.fit(data.train, data.fields, label=data.label)",
        "import pandas as pd; spec = FeatureSpec.fit(pd.concat([data.train, *data.eval_splits().values()]), "
        "data.fields, label=data.label)",
        "test_the_feature_spec",
    ),
    "recall-test-no-valid-mask": (
        "training/recall_metrics.py",
        '(train_u, train_i) if split == "valid" else (np.r_[train_u, data.valid[0]], np.r_[train_i, data.valid[1]])',
        "(train_u, train_i)",
        "test_test_ranking",
    ),
    "oracle-drop-free": ("training/datasets/protocol.py", ODDS, ODDS.replace(" * np.maximum(free, 1)", ""), "oracle"),
    "oracle-drop-n-user-rows": (
        "training/datasets/protocol.py",
        ODDS,
        "odds = p_played * np.maximum(free, 1) / n_neg",
        "oracle",
    ),
    "oracle-drop-p-label": ("training/datasets/protocol.py", SCORE, "return odds / (1 + odds)", "oracle"),
    "oracle-noise": (
        "training/datasets/protocol.py",
        SCORE,
        SCORE + " * (1 + 1e-3 * np.random.default_rng(0).standard_normal(len(odds)))",
        "oracle",
    ),
}


def run(name: str) -> bool:
    path, old, new, selector = MUTATIONS[name]
    file = ROOT / path
    source = file.read_text()
    if source.count(old) != 1:
        raise SystemExit(f"error: {name}: the original text is not in {path} exactly once (code moved?)")
    file.write_text(source.replace(old, new))
    try:
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", GUARDS, "-k", selector, "-p", "no:cacheprovider"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    finally:
        file.write_text(source)
    why = next((line for line in proc.stdout.splitlines() if line.startswith("E ")), "")[:120]
    print(f"{name}: {'CAUGHT' if proc.returncode else 'NOT CAUGHT'} {why}", flush=True)
    return proc.returncode != 0


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"error: unknown mutation(s) {unknown}; known: {', '.join(MUTATIONS)}", file=sys.stderr)
        return 2
    caught = [run(n) for n in names]
    return 0 if all(caught) else 1


if __name__ == "__main__":
    sys.exit(main())
