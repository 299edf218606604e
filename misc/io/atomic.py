"""Atomic writes: every writer goes through `atomic_path` (a temporary name in the target
folder, renamed on success), so a killed run never leaves a half-written file and a rerun can
trust that any file present is complete."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from misc.errors import CannotWrite


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    `suffix` keeps the extension that writers such as PIL or np.savez look at.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give outputs the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:  # a full disk lands here: say which file, keep what exists
        tmp.unlink(missing_ok=True)
        raise CannotWrite(f"could not write {path}: {err}; earlier outputs are intact") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folders: list[str | Path]) -> int:
    """Delete the temporary files a killed run left in `folders` (`atomic_path` names them
    .<name>.<random>.tmp); returns how many. Call it before any writer starts."""
    removed = 0
    for folder in {Path(f) for f in folders}:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed
