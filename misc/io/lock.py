"""One run at a time per output folder (docs/pipeline.md §2.8).

A run takes an exclusive lock on a lock file for every output it writes (each folder and each
checkpoint: `<parent>/.<name>.run.lock`, so that no output folder is made before its step runs;
a folder that every call writes, such as the metrics folder: `<folder>/.run.lock`) and keeps
the file open for its lifetime. The kernel drops the lock when the process ends, however it ends
(SIGKILL, out of memory, a crash), so a killed run never leaves a folder locked, unlike a pid
file. The lock is a POSIX record lock (`fcntl.lockf`), owned by the process, rather than
`flock`, which forked children share: a killed run's DataLoader workers, still exiting, would
otherwise keep its folders locked for a while. The file records who holds it (pid, host, start
time, command) for the message a second run gets.

Locks are re-entrant within a process: a process that already holds a folder's lock takes it
again at no cost, since one process runs its calls one after the other (tests call
run_sample.main repeatedly). Without fcntl (not POSIX) no lock is taken.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterable, Mapping

from misc.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_NAME = ".run.lock"
_held: dict[Path, int] = {}  # lock file -> open descriptor, for this process


class FolderInUse(UserError, RuntimeError):
    """Another live process holds the lock of an output folder."""


def lock_file_of(output: str | Path) -> Path:
    """The lock file of an output folder or file: beside it, in its parent folder."""
    output = Path(output).resolve()
    return output.parent / f".{output.name}{LOCK_NAME}"


def lock_folders(folders: Iterable[str | Path], command: str, hint: str = "",
                 outputs: Iterable[str | Path] = ()) -> list[Path]:
    """Take the lock of every folder (`<folder>/.run.lock`, the folder made if missing) and of
    every output (`lock_file_of`, its parent made if missing), or of none: raise FolderInUse
    naming the output in use and its holder, then what else the user can do: `hint`, or, where
    `folders` / `outputs` map each path to the flag that names it, giving that flag another
    value. Returns the lock files."""
    named = {Path(f).resolve() / LOCK_NAME: (Path(f), _flag(folders, f)) for f in folders}
    named |= {lock_file_of(o): (Path(o), _flag(outputs, o)) for o in outputs}
    taken = []
    try:
        for path in sorted(named):
            output, flag = named[path]
            advice = hint or (f"Or give this run another {flag}." if flag else "")
            if path not in _held and _take(path, command, output, advice):
                taken.append(path)
    except BaseException:
        release(taken)
        raise
    return sorted(named)


def _flag(paths: Iterable[str | Path], path: str | Path) -> str | None:
    return paths.get(path) if isinstance(paths, Mapping) else None


def release(paths: Iterable[Path] | None = None) -> None:
    """Drop this process's locks on `paths` (all of them when None). The lock files stay: a
    file removed while another process has it open would let two runs lock two files."""
    for path in list(_held) if paths is None else list(paths):
        fd = _held.pop(path, None)
        if fd is not None:
            os.close(fd)  # releases the lock (this module alone opens the file in a process)


def _take(path: Path, command: str, output: Path, hint: str) -> bool:
    """Lock `path` and write this process's record into it; False where the file system
    cannot lock (the run goes on unlocked, with a warning)."""
    if fcntl is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 65536, 0).decode(errors="replace")
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderInUse(refusal(path, holder, hint, output)) from None
        # stderr rather than misc.engine.log: this module stays free of torch, quick to import
        print(f"warning: cannot lock {path} ({err}); two runs writing this folder at once "
              f"would not be stopped", file=sys.stderr, flush=True)
        return False
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds")}
    os.ftruncate(fd, 0)  # only now: the holder's record stays readable while it holds the lock
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[path] = fd
    return True


def refusal(path: Path, holder: str, hint: str = "", output: Path | None = None) -> str:
    """The message of FolderInUse about `output` (default: the lock file's folder), from the
    holder's record in the lock file."""
    try:
        who = json.loads(holder)
        about = (f"pid {who['pid']} on host {who['host']}, started {who['started']}, "
                 f"command: {who['command']}")
    except (ValueError, KeyError, TypeError):  # the holder has not written its record yet
        about = "a process that is just starting (no record yet)"
    return (f"{output or path.parent} is in use by another run: {about} (lock file {path}). Wait for "
            f"that run to end or stop it; its lock goes with its process, so the same command "
            f"can then be rerun as it is (a run that was killed resumes)."
            + (f" {hint}" if hint else ""))
