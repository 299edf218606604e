"""Logging on the main process, and the copy of stdout to a log file (the reference's
--log_name behaviour)."""
from __future__ import annotations

import sys
from pathlib import Path

from misc.engine import dist


class _Tee:
    """Writes to the terminal and to a log file."""

    def __init__(self, stream, path: Path):
        self.stream, self.file = stream, open(path, "a", buffering=1)

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def tee_stdout(path: str | Path) -> None:
    """Copy everything printed on the main process to `path` (appending)."""
    if dist.is_main() and not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, Path(path))


def log(*msg) -> None:
    """Print on the main process only, flushed (stdout is often tee'd)."""
    if dist.is_main():
        print(*msg, flush=True)


def to_log_file(text: str) -> str | None:
    """Write `text` to the log file only, not the terminal (a traceback the screen leaves
    out); the file's path, or None before the log starts."""
    if not isinstance(sys.stdout, _Tee):
        return None
    sys.stdout.file.write(text)
    sys.stdout.file.flush()
    return sys.stdout.file.name
