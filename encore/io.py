"""Small file helpers: checksums and atomic writes (temp path in the same folder, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE, DIR_MODE = 0o644, 0o755  # mkstemp/mkdtemp make 0600/0700; results and bundles are read by other users


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(final: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """A temp file (or, with directory=True, an empty temp folder) beside `final`, renamed onto it when the
    block ends without error and removed when it raises, so readers see the old content or the new, never half.

        with atomic_path(out / "model.onnx") as tmp:
            torch.onnx.export(..., tmp)

    The temp name is `.<final name>.<random>.tmp` in the same folder (a rename never crosses filesystems).
    Writers that pick a format from the file suffix (np.save, savefig) must be given a handle or a format.
    An existing folder at `final` is replaced whole.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, DIR_MODE if directory else FILE_MODE)
        if directory:
            _replace_dir(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def drop_rows(folder: str | Path, column: str, value: str, schema: object = None) -> None:
    """Remove every row whose `column` equals `value` from the parquet parts in `folder`: a part left empty is
    deleted, the others are rewritten whole (atomic_path), never half. pyarrow is imported here, on use."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for part in sorted(Path(folder).glob("*.parquet")):
        table = pq.read_table(part, schema=schema)
        keep = pc.not_equal(table.column(column), value)
        if pc.all(keep).as_py():
            continue
        if not pc.any(keep).as_py():
            part.unlink()
            continue
        with atomic_path(part) as tmp:
            pq.write_table(table.filter(keep), tmp)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename folder `tmp` onto `final`; an old `final` is moved aside first and deleted after."""
    if not final.exists():
        tmp.rename(final)
        return
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
    final.rename(old / final.name)
    try:
        tmp.rename(final)
    except BaseException:
        (old / final.name).rename(final)  # put the old content back: a failed save changes nothing
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_parquet_atomic(path: str | Path, frame: Any) -> None:
    """A pandas frame as parquet (no index), all or nothing (atomic_path)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json_atomic(path: str | Path, doc: object) -> None:
    write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
