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
SCORE = "out[name] = truth.p_label(users, items) * share_played"
G = "g = np.divide(m, k, out=np.zeros_like(m), where=k > 0)"
H = "h = n_neg * m / np.maximum(size_pool - k, 1)"
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
    "oracle-drop-not-drawn": ("training/datasets/oracle.py", "negative = stay_out * (", "negative = (", "oracle"),
    "oracle-drop-share": ("training/datasets/oracle.py", G, "g = np.ones_like(m)", "oracle"),
    "oracle-min-n-pi": (  # the old estimate's inclusion probability: min(1, n * pi) instead of the race
        "training/datasets/oracle.py",
        "stay_out = np.exp(-w_i[:, :, None] * t[:, None, :])",
        "stay_out = np.exp(-w_i[:, :, None] * t[:, None, :]) * 0 + (1 - np.minimum(1, n[:, None, None] * w_i[:, :, "
        "None] / weights.sum(1)[:, None, None]))",
        "oracle",
    ),
    "oracle-drop-n-neg": ("training/datasets/oracle.py", H, H.replace("n_neg * m", "m"), "oracle"),
    "oracle-drop-p-label": ("training/datasets/oracle.py", SCORE, "out[name] = share_played", "oracle"),
    "oracle-noise": (
        "training/datasets/oracle.py",
        SCORE,
        SCORE + " * (1 + 1e-3 * np.random.default_rng(0).standard_normal(len(share_played)))",
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
