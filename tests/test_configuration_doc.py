"""One settings module (encore/settings.py): docs/configuration.md is its output, old names still work with a
warning, and no other module in encore/, services/, training/ or feature_repo/ reads the environment."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from encore import settings
from encore.settings import EmbedderSettings, EncoreSettings, RankerSettings, RetrieverSettings
from encore.store import Store

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
CODE_DIRS = ("encore", "services", "training", "feature_repo")
# The only other places that touch os.environ, and why they may.
ENVIRON_ALLOWED = {
    "encore/settings.py": "the settings module itself (deprecated-name warnings)",
    "services/stack.py": "copies the environment into the three service processes it starts",
    "training/datasets/hetrec.py": "sets HF_HUB_OFFLINE, a library switch, before loading the text model",
    "training/distributed.py": "reads the launcher's WORLD_SIZE, RANK, LOCAL_RANK (torchrun's contract, not settings)",
}


def test_the_doc_is_the_settings_module_output() -> None:
    """Regenerate with `python -m encore.settings --markdown > docs/configuration.md`."""
    result = subprocess.run(
        [sys.executable, "-m", "encore.settings", "--markdown"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert DOC.read_text() == result.stdout, "docs/configuration.md is stale: regenerate it (command in its header)"
    documented = set(re.findall(r"^\| `(ENCORE_[A-Z0-9_]+)`", DOC.read_text(), flags=re.M))
    assert documented == settings.all_variable_names() - set(settings.deprecated_names())


def test_the_docs_name_only_current_variables() -> None:
    """A renamed or removed variable in a page would send a reader to a setting that is ignored or deprecated."""
    current = settings.all_variable_names() - set(settings.deprecated_names())
    pages = [p for p in sorted((ROOT / "docs").rglob("*.md")) if p != DOC]  # DOC lists the old names on purpose
    named = {(p.name, n) for p in pages for n in re.findall(r"\bENCORE_[A-Z0-9_]*[A-Z0-9]\b", p.read_text())}
    assert not {(page, n) for page, n in named if n not in current}


def test_no_module_reads_the_environment_but_the_settings_module() -> None:
    readers = {
        str(path.relative_to(ROOT))
        for folder in CODE_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if re.search(r"\bos\.(environ|getenv)\b|\bgetenv\(", path.read_text())
    }
    assert readers == set(ENVIRON_ALLOWED), sorted(readers ^ set(ENVIRON_ALLOWED))


def test_every_variable_name_is_spelled_by_its_service() -> None:
    """Shared settings are ENCORE_*; a service's own are ENCORE_<SERVICE>_*, and no name is read twice."""
    for cls, prefix in ((RankerSettings, "ENCORE_RANKER_"), (RetrieverSettings, "ENCORE_RETRIEVER_")):
        assert all(settings.variable_names(f)[0].startswith(prefix) for f in settings.own_fields(cls).values())
    assert all(
        settings.variable_names(f)[0].startswith("ENCORE_EMBEDDER_")
        for f in settings.own_fields(EmbedderSettings).values()
    )
    current = [settings.variable_names(f)[0] for _, c, _ in settings.SECTIONS for f in settings.own_fields(c).values()]
    assert len(current) == len(set(current))
    assert not set(current) & set(settings.deprecated_names())


def test_only_listed_encore_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generic names (REDIS_URL, API_KEY, MAX_K) never configure Encore; only the listed ENCORE_* names do."""
    for name in [n for n in os.environ if n.startswith("ENCORE_")]:  # `make test` exports ENCORE_API_KEY
        monkeypatch.delenv(name)
    for name, value in {
        "REDIS_URL": "redis://other:1/0",
        "API_KEY": "leak",
        "MAX_K": "7",
        "LOG_LEVEL": "debug",
    }.items():
        monkeypatch.setenv(name, value)
    ranker = RankerSettings()
    assert (ranker.redis_url, ranker.api_key.get_secret_value(), ranker.max_k, ranker.log_level) == (
        "redis://127.0.0.1:6379/0",
        "",
        100,
        "info",
    )
    for _, cls, _ in settings.SECTIONS:  # pydantic-settings also reads ENCORE_<field name>: it must be listed
        for name, field in settings.own_fields(cls).items():
            assert f"ENCORE_{name.upper()}" in settings.variable_names(field), (cls.__name__, name)


def test_old_names_still_work_with_a_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ENCORE_CANDIDATES", "321")
    monkeypatch.setenv("ENCORE_DATA_DIR", "/tmp/encore-old-cache")
    with pytest.warns(DeprecationWarning) as record, caplog.at_level(logging.WARNING, logger="encore.settings"):
        ranker = RankerSettings()
    assert any("ENCORE_CANDIDATES is deprecated; set ENCORE_RANKER_CANDIDATES" in str(w.message) for w in record)
    assert ranker.candidates == 321
    assert ranker.cache_dir == Path("/tmp/encore-old-cache")
    assert "ENCORE_DATA_DIR is deprecated" in caplog.text  # operators see it in the log
    monkeypatch.setenv("ENCORE_RANKER_CANDIDATES", "123")  # the new name wins over the old one
    with pytest.warns(DeprecationWarning):
        assert RankerSettings().candidates == 123


def test_the_ranker_and_embedder_each_have_their_own_retriever_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RankerSettings().retriever_timeout_s == 0.5 and EmbedderSettings().retriever_timeout_s == 1.0
    monkeypatch.setenv("ENCORE_RANKER_RETRIEVER_TIMEOUT_S", "0.25")
    monkeypatch.setenv("ENCORE_EMBEDDER_RETRIEVER_URL", "")  # empty: the embedder notifies nobody
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # current names: no deprecation warning
        ranker, embedder = RankerSettings(), EmbedderSettings()
    assert ranker.retriever_timeout_s == 0.25 and embedder.retriever_timeout_s == 1.0
    assert embedder.retriever_url == "" and ranker.retriever_url == "http://127.0.0.1:8001"
    monkeypatch.setenv("ENCORE_RETRIEVER_URL", "http://old:1")  # the old shared name still reaches both
    with pytest.warns(DeprecationWarning):
        assert RankerSettings().retriever_url == "http://old:1"
    with pytest.warns(DeprecationWarning):
        assert EmbedderSettings().retriever_url == ""  # the embedder's own name wins


def test_settings_are_checked_and_constructed_by_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RankerSettings(max_k=10, default_k=5).max_k == 10  # tests and callers pass fields by name
    with pytest.raises(ValueError, match="default_k"):
        RankerSettings(max_k=10, default_k=50)
    monkeypatch.setenv("ENCORE_FEAST_ONLINE", "memcached")
    with pytest.raises(ValueError, match="ENCORE_FEAST_ONLINE"):  # the message names the variable
        EncoreSettings()
    monkeypatch.setenv("ENCORE_FEAST_ONLINE", "redis")
    monkeypatch.setenv("ENCORE_FEAST_PROJECT", "settings_test")
    assert Store().settings == EncoreSettings().store()  # a Store built without settings reads the same
    assert Store().settings.online == "redis" and Store().settings.project == "settings_test"


def test_the_cli_prints_the_effective_settings_without_the_key(tmp_path: Path) -> None:
    env = {"ENCORE_API_KEY": "s3cret-key", "ENCORE_RANKER_MAX_K": "77", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "encore.settings"], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert '"max_k": 77' in result.stdout and "s3cret-key" not in result.stdout
