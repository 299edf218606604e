"""Output folders tagged with the dataset they hold: VOC and COCO outputs never mix."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from misc.errors import BadInput
from misc.io.atomic import atomic_path

DATASET_TAG = ".dataset"


def claim_folders(folders: Mapping[str, str | Path], dataset: str) -> None:
    """Tag each existing output folder with the dataset it holds, after checking that none
    already holds another dataset's outputs (VOC and COCO artifacts never mix). `folders` maps
    the flag that names each folder to the folder, for the error message. Checks every folder
    before writing any tag; creates none (call it again once the steps made theirs)."""
    for flag, folder in folders.items():
        tag = Path(folder) / DATASET_TAG
        if tag.is_file() and tag.read_text().strip() != dataset:
            raise BadInput(f"{folder} holds {tag.read_text().strip()} outputs and this run is "
                             f"--dataset {dataset}: pass another {flag} (or delete the folder)")
    for folder in folders.values():
        tag = Path(folder) / DATASET_TAG
        if Path(folder).is_dir() and not tag.is_file():
            with atomic_path(tag) as tmp:
                tmp.write_text(dataset + "\n")
