"""Output records: every output folder (and trained checkpoint) says what made it
(docs/outputs.md).

A record is a small JSON file, `<folder>/.record.json` or `<checkpoint>.record.json`:

    {"step": "make_cam",
     "inputs": {"cam_weights_name": {"path": "sess/res50_cam.pth", "sha256": "9f2c..."}},
     "settings": {"cam_network": "net.resnet50_cam", "cam_scales": [1.0, 0.5, 1.5, 2.0]},
     "id": "5b1e...", "complete": true, "started": "...", "finished": "..."}

An input is a file (identified by its content hash) or another output folder (by its record's
id), so a change anywhere upstream changes the id of everything made from it. A step that finds
a record other than the one it would write remakes every file (each replaced atomically, none
deleted first); a matching record means a resumed run keeps the files already written. The
record is written before the first file, marked complete after the last.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from misc.io.atomic import atomic_path

RECORD_NAME = ".record.json"

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (cached per path, size and mtime within the process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def record_path(target: str | Path) -> Path:
    """Where the record of an output folder (`<folder>/.record.json`) or file
    (`<file>.record.json`) lives; a target that does not exist yet is a folder unless it has
    a suffix."""
    target = Path(target)
    is_file = target.is_file() or (not target.is_dir() and target.suffix != "")
    return target.with_name(target.name + RECORD_NAME) if is_file else target / RECORD_NAME


def make_record(step: str, inputs: Mapping[str, Mapping[str, Any]],
                settings: Mapping[str, Any]) -> dict:
    """The record a step would write: `inputs` maps a name to {"path", "sha256"} (a file) or
    {"path", "record"} (a folder's record id; None when unknown), `settings` the values that
    shape the output. Values go through JSON so that tuples compare equal to stored lists."""
    body = json.loads(json.dumps({"step": step, "inputs": inputs, "settings": settings}))
    body["id"] = hashlib.sha1(json.dumps(_identity(body), sort_keys=True).encode()).hexdigest()
    return body


def _identity(record: Mapping) -> dict:
    """What the id hashes: the step, each input's content id (not its path) and the settings."""
    inputs = {k: v.get("sha256", v.get("record")) for k, v in record["inputs"].items()}
    return {"step": record["step"], "inputs": inputs, "settings": record["settings"]}


def file_input(path: str | Path) -> dict:
    """An input file for `make_record`: its path and content hash (None if it is missing)."""
    return {"path": str(path), "sha256": file_digest(path) if Path(path).is_file() else None}


def folder_input(folder: str | Path) -> dict:
    """An input folder for `make_record`: its path and its record's id (None without one)."""
    record = read_record(folder)
    return {"path": str(folder), "record": record.get("id") if record else None}


def read_record(target: str | Path) -> dict | None:
    """The stored record of a folder or file, None when there is none (or it is unreadable)."""
    try:
        return json.loads(record_path(target).read_text())
    except (OSError, ValueError):
        return None


def write_record(target: str | Path, record: Mapping, complete: bool) -> None:
    """Store `record` atomically, with its completion state and a timestamp."""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    old = read_record(target) or {}
    stamps = {"started": old.get("started", now) if complete else now}
    if complete:
        stamps["finished"] = now
    path = record_path(target)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**record, "complete": complete, **stamps}, indent=1) + "\n")


def differences(old: Mapping, new: Mapping) -> list[str]:
    """Why `old` (stored) is not `new` (wanted), in words: "sess/res50_cam.pth changed",
    "--cam_conf_fg_thres 0.3 -> 0.35", ... An input whose new id is unknown (None) is not
    compared."""
    if old.get("step") != new["step"]:
        return [f"it was made by {old.get('step')}, not {new['step']}"]
    reasons = []
    for name, want in new["inputs"].items():
        have = old.get("inputs", {}).get(name, {})
        key = "sha256" if "sha256" in want else "record"
        if want.get(key) is not None and have.get(key) != want[key]:
            reasons.append(f"{want['path']} changed")
    for name, value in new["settings"].items():
        if old.get("settings", {}).get(name, "<unset>") != value:
            reasons.append(f"--{name} {_show(old.get('settings', {}).get(name))} -> {_show(value)}")
    return reasons


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


REMAKE_NAME = ".remake"


def begin_output(folder: str | Path, record: Mapping, suffix: str, overwrite: bool) -> str | None:
    """Before a step writes `folder/*<suffix>`: when the stored record matches `record` (a
    resumed or repeated run), its files stay done; otherwise every file already there becomes
    stale (the `.remake` marker: files older than it are redone, see `is_done`) but stays in
    place until it is replaced, so a failure half-way loses nothing. Writes `record` as
    incomplete. Returns None when the files are kept, else the reason they are remade."""
    folder = Path(folder)
    old = record_of(folder)
    has_files = folder.is_dir() and any(folder.glob(f"*{suffix}"))
    if overwrite:
        reason = "--overwrite True"
    elif old is None:
        reason = f"{folder} has no record of what made its files" if has_files else None
    else:
        changed = differences(old, record)
        reason = f"{', '.join(changed)} since {folder} was made" if changed else None
    if reason is not None and has_files:
        marker = folder / REMAKE_NAME
        marker.unlink(missing_ok=True)
        marker.touch()  # the filesystem's clock, the same one that stamps the outputs
    if folder.is_file():  # a checkpoint: the file it replaces, told apart from one given by hand
        record = {**record, "replaces": file_digest(folder)}
    write_record(folder, record, complete=False)
    return reason


def end_output(target: str | Path, record: Mapping, suffix: str = "") -> int:
    """After a step finished writing `target`: its record, complete. In a folder that was
    being remade, the `*<suffix>` files the step did not remake (ids not on its list) were
    made under another record and are removed, so that the record describes every file of
    the folder. Returns how many were removed."""
    removed = 0
    marker = Path(target) / REMAKE_NAME
    if Path(target).is_dir() and marker.is_file():
        for path in Path(target).glob(f"*{suffix}"):
            if path.is_file() and not is_done(path):
                path.unlink()
                removed += 1
    if Path(target).is_file():  # the file the record describes, by content
        record = {**record, "sha256": file_digest(target)}
    write_record(target, record, complete=True)
    if Path(target).is_dir():
        marker.unlink(missing_ok=True)
    return removed


def is_done(path: str | Path) -> bool:
    """Whether an output file exists and is not stale: written after its folder's `.remake`
    marker, when there is one (a remake in progress)."""
    path = Path(path)
    try:
        made = path.stat().st_mtime_ns
    except OSError:
        return False
    try:
        return made >= (path.parent / REMAKE_NAME).stat().st_mtime_ns
    except OSError:
        return True


def record_of(target: str | Path) -> dict | None:
    """The stored record of a folder or file, when it describes what is there now. A file (a
    checkpoint) replaced by hand after its record was written, or put there while its step was
    unfinished, is described by none (None: given by hand)."""
    record = read_record(target)
    if record is None or not Path(target).is_file():
        return record
    now = file_digest(target)
    if record.get("complete"):
        return record if record.get("sha256", now) == now else None
    return record if record.get("replaces") == now else None


def mismatch(target: str | Path, record: Mapping) -> str | None:
    """Why `target` is not what `record` describes (None when it is, or when `target` has no
    record that describes it: made outside this pipeline, not judged)."""
    old = record_of(target)
    if old is None:
        return None
    changed = differences(old, record)
    if changed:
        return f"{', '.join(changed)} since {target} was made"
    if not old.get("complete", False):
        return f"{target} is unfinished (its step was interrupted)"
    return None
