"""A lock held for as long as a job runs (a retrain), by one process among every node that shares the store.

An flock only covers one machine (and is unreliable on network file systems), while a retrain CronJob may start on
any node. With a Redis online store the lock is a redis-py Lock on that server: it expires `ttl_s` after its holder
stops renewing it (a crashed node frees it), and a daemon thread renews it every `ttl_s / 3` while the job runs.
With SQLite (one machine by construction) it is an flock on a file beside the database. A held lock is refused at
once, never waited for: the second job should not queue behind a long first one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from encore.errors import EncoreError
from encore.store import REDIS_KINDS, Store, redis_client

log = logging.getLogger(__name__)


class JobLocked(EncoreError):
    """Another process, on this node or another, holds the lock."""


class LockLost(EncoreError):
    """The lock expired or was taken while the job ran (the store was unreachable longer than its ttl)."""


class HeldLock:
    """What a job holds: `check()` before an irreversible step raises LockLost when the lock was lost meanwhile."""

    def __init__(self, name: str):
        self.name, self.lost = name, threading.Event()

    def check(self) -> None:
        if self.lost.is_set():
            raise LockLost(f"lock {self.name!r} was lost while the job ran: another job may hold it now")


@contextmanager
def job_lock(store: Store, name: str, ttl_s: float = 60.0) -> Iterator[HeldLock]:
    """Hold `name` for the `with` block across every process sharing `store`; JobLocked when it is held already."""
    held = HeldLock(name)
    if store.settings.online not in REDIS_KINDS:
        yield from _file_lock(store, name, held)
        return
    client = redis_client(store.settings, connect_timeout_s=2, timeout_s=5)
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    lock = client.lock(f"{store.settings.project}:job:{digest}", timeout=ttl_s, thread_local=False)
    if not lock.acquire(blocking=False):
        raise JobLocked(f"another job holds the lock {name!r} (in the store {store.settings.project!r})")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, ttl_s, stop, held), name=f"lock-{name}", daemon=True)
    renewer.start()
    try:
        yield held
    finally:
        stop.set()
        renewer.join()
        if not held.lost.is_set():
            try:
                lock.release()
            except Exception as error:  # expired meanwhile; the key is another holder's now, or gone
                log.warning("lock %r could not be released: %s", name, error)


def _renew(lock: Any, ttl_s: float, stop: threading.Event, held: HeldLock) -> None:
    from redis.exceptions import LockNotOwnedError

    while not stop.wait(ttl_s / 3):
        try:
            lock.reacquire()  # back to a full ttl
        except LockNotOwnedError as error:  # expired (the store was out of reach past the ttl) or taken
            log.error("lock %r lost: %s", held.name, error)
            held.lost.set()
            return
        except Exception as error:  # the store out of reach for now: the next round tries again
            log.warning("lock %r not renewed this time: %s", held.name, error)


def _file_lock(store: Store, name: str, held: HeldLock) -> Iterator[HeldLock]:
    folder = store.settings.data_dir / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"job:{name}".encode()).hexdigest()[:32]
    with open(folder / f"{digest}.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobLocked(f"another job holds the lock {name!r} (beside {store.settings.data_dir})") from None
        try:
            yield held
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
