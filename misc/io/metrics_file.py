"""The metrics file (result/metrics.jsonl): one JSON line per evaluation or training."""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Mapping


def append_metrics(path: str | Path, record: Mapping) -> None:
    """Append one JSON line (with a timestamp) to result/metrics.jsonl."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
