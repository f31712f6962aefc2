"""Recover from a Snakemake process that was killed (SIGKILL, power loss) without manual cleanup.

Snakemake locks the working directory with files in ``.snakemake/locks/`` that record no owner;
a killed run leaves them behind, and every later run stops with ``LockException`` until someone
runs ``snakemake --unlock``. The Snakefile calls :func:`record_owner` once Snakemake holds its
lock (``onstart``), :func:`forget_owner` when the run ends (``onsuccess`` / ``onerror``), and
:func:`clear_stale_locks` before the next run builds its DAG: lock files whose recorded owner is
a process of this host that no longer exists are removed, with one line saying so. Locks of a
live process, of another host, or of no recorded owner are never touched (Snakemake's own
message then stands).

No torch here: the Snakefile imports this for every run. It lives with the workflow
(``workflow/scripts/``), beside the rule harness.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

OWNERS = "ppap-lock-owners"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where it cannot be read:
    together with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # fields 3, 4, ... (the command name may hold spaces)
    if fields[0] in ("Z", "X"):
        return None  # a zombie is dead, only not yet reaped by its parent
    return fields[19]  # field 22: start time


def record_owner(persistence_dir: str | os.PathLike, lock_files) -> Path | None:
    """Write ``<persistence_dir>/ppap-lock-owners/<pid>.json``: this process, its host and the lock
    files it holds (path, inode and mtime: a later run's lock of the same name is another file). Nothing is written where the start time cannot be read (no /proc)."""
    pid = os.getpid()
    started = _start_time(pid)
    locks = []
    for name in sorted(os.path.abspath(f) for f in lock_files):
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            continue
        locks.append(dict(path=name, inode=stat.st_ino, mtime_ns=stat.st_mtime_ns))
    if started is None or not locks:
        return None
    folder = Path(persistence_dir) / OWNERS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(json.dumps(dict(pid=pid, host=socket.gethostname(), started=started, locks=locks)))
    os.replace(tmp, path)
    return path


def forget_owner(persistence_dir: str | os.PathLike) -> None:
    try:
        (Path(persistence_dir) / OWNERS / f"{os.getpid()}.json").unlink()
    except FileNotFoundError:
        pass


def clear_stale_locks(persistence_dir: str | os.PathLike = ".snakemake", report=None) -> list[str]:
    """Remove the lock files of recorded owners that are dead processes of this host; returns them.

    ``report`` (default: print to stderr) gets one line per dead owner.
    """
    folder = Path(persistence_dir) / OWNERS
    if not folder.is_dir():
        return []
    report = report or (lambda line: print(line, file=sys.stderr))
    lock_dir = (Path(persistence_dir) / "locks").resolve()
    host = socket.gethostname()
    removed = []
    for record in sorted(folder.glob("*.json")):
        try:
            owner = json.loads(record.read_text())
            pid, started = int(owner["pid"]), str(owner["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: leave it (and any lock) alone
        if owner.get("host") != host or _start_time(pid) == started:
            continue  # another host's run, or still running
        mine = []
        for entry in owner.get("locks", []):
            lock = Path(entry["path"])
            try:
                stat = lock.stat()
            except (OSError, KeyError, TypeError):
                continue
            # The same file, not a lock a later run wrote under the same name (Snakemake reuses 0.input.lock ...).
            if (lock.parent.resolve() == lock_dir and lock.name.endswith(".lock")
                    and (stat.st_ino, stat.st_mtime_ns) == (entry.get("inode"), entry.get("mtime_ns"))):
                lock.unlink()
                mine.append(str(lock))
        record.unlink()
        if mine:
            report(f"Removed the lock left by a Snakemake run that was killed (pid {pid} on {host}): "
                   f"{', '.join(Path(m).name for m in mine)}")
        removed.extend(mine)
    return removed
