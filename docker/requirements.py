"""Print the requirement lines of pyproject.toml's core dependencies plus the named extras.

The images install dependencies from this list *before* the source is copied, so a code change does not
reinstall feast or torch (layer cache), and the project itself is not pip-installed: the services run
from /app because encore.store finds feature_repo/ relative to the source tree.

Usage: python requirements.py PYPROJECT [EXTRA ...] > requirements.txt
"""

import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in optional]
    if unknown:  # a typo here would silently build an image without its dependencies
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    lines = list(project["dependencies"])
    for name in extras:
        lines += optional[name]
    return lines


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("\n".join(requirements(Path(sys.argv[1]), sys.argv[2:])))
