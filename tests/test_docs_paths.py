"""Every repository path the README and docs/ name in backticks exists and is not git-ignored.

A results folder once matched the `results/` ignore rule: the docs cited files a clean clone did not have.
Paths under results/, artifacts/ and data/ are outputs of the commands shown and are not checked.
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ("benchmarks", "docker", "docs", "encore", "feature_repo", "services", "tests", "training")
PATH_IN_BACKTICKS = re.compile(rf"`((?:{'|'.join(TOP_FOLDERS)})/[^`\s]*)`")


def cited_paths() -> list[str]:
    found: set[str] = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in PATH_IN_BACKTICKS.findall(doc.read_text()):
            braces = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", path)  # a/{b,c}.json names two files
            parts = braces[2].split(",") if braces else [None]
            found.update(path if part is None else braces[1] + part + braces[3] for part in parts)
    return sorted(found)


def test_docs_cite_some_paths():
    assert "docs/benchmarks.md" in cited_paths()


@pytest.mark.parametrize("path", cited_paths())
def test_cited_path_exists_and_is_tracked(path):
    assert glob.glob(str(ROOT / path)), f"{path} is cited in the docs but missing"
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", path.rstrip("/*")], cwd=ROOT).returncode == 0
        assert not ignored, f"{path} is cited in the docs but git ignores it: a clean clone would not have it"
