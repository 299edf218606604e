"""Checkpoints: written atomically, loaded strictly, with errors that say what a file holds
and how to fix it (docs/pipeline.md §2.9)."""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from misc.errors import BadInput, MissingInput
from misc.io.atomic import atomic_path


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        torch.save(dict(state_dict), tmp)


@dataclass(frozen=True)
class CheckpointKeys:
    """How the reference's checkpoint files may name keys that a network's state_dict does not
    have; a network declares it as its class attribute `checkpoint_keys` and `load_checkpoint`
    applies it (docs/pipeline.md §2.9).

    aliases: alias prefix -> canonical prefix. The reference registers module lists over the
        same modules (e.g. CAM's `backbone.0.*` is `stage1.*`), so its files hold each of those
        tensors twice. An alias key is checked equal to its canonical key and dropped (renamed
        when the canonical key is absent); keys the network owns itself are never folded.
    """
    aliases: Mapping[str, str] = field(default_factory=dict)


# How a state_dict's keys show which network wrote it: (test on the key set, description).
# First match wins, so DeepLab (whose ResNet is also called `backbone`) comes first.
_KNOWN_NETWORKS: tuple[tuple[Callable[[set[str]], bool], str], ...] = (
    # Conformer-S before AMN: BAO's Conformer also has label_enc.*
    (lambda ks: "trans_patch_conv.weight" in ks and "classifier_x.weight" in ks,
     "Conformer-S with BAO's layers (trans_*, conv_trans_*, label_enc.*, classifier_x.*: "
     "written by BAO training)"),
    (lambda ks: "trans_patch_conv.weight" in ks,
     "Conformer-S (trans_*, conv_trans_*: ImageNet or TransCAM weights)"),
    (lambda ks: any(k.startswith("aspp.") for k in ks),
     "DeepLab-V2 (backbone.*, aspp.*: written by train_seg, --seg_weights_name)"),
    (lambda ks: any(k.startswith(("fc_edge", "fc_dp")) for k in ks),
     "IRN (fc_edge*, fc_dp*: written by train_irn, --irn_weights_name)"),
    (lambda ks: any(k.startswith("label_enc.") for k in ks),
     "AMN (label_enc.*, classifier.1.*: written by train_amn, --amn_weights_name)"),
    (lambda ks: "classifier.weight" in ks and any(k.startswith("stage4.") for k in ks),
     "CAM (stage1..4.*, classifier.weight: written by train_cam, --cam_weights_name)"),
    (lambda ks: "conv1.weight" in ks and any(k.startswith("layer4.") for k in ks),
     "a bare ResNet backbone (conv1.*, layer1..4.*: ImageNet weights, --backbone_weights)"),
    (lambda ks: bool(ks) and all(k.startswith("module.") for k in ks),
     "a DataParallel/DDP wrapper's state_dict (every key starts with module.; save "
     "model.module.state_dict() instead)"),
)


def network_of(keys: set[str]) -> str | None:
    """Which network a state_dict's keys look like (see _KNOWN_NETWORKS), or None."""
    return next((name for test, name in _KNOWN_NETWORKS if test(keys)), None)


def _read_failure(path: Path, err: Exception) -> str:
    """What a file that torch.load(weights_only=True) refuses is, in words."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        return "is empty (0 bytes): a copy or download that never finished"
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return (f"is truncated ({size} bytes, a torch.save archive without its end): a copy, "
                f"download or save that was cut short")
    if isinstance(err, pickle.UnpicklingError):
        return ("holds pickled Python objects that weights-only loading refuses (e.g. a whole "
                "network saved with torch.save(model)): save model.state_dict() instead")
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"is not a file that torch.save wrote ({first_line})"


def _not_weights(state: object) -> str | None:
    """Why a loaded object is not a plain state_dict (str -> tensor), in words; None if it is."""
    if isinstance(state, torch.Tensor):
        return f"holds a single tensor of shape {tuple(state.shape)}, not a state_dict"
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a state_dict (a dict of name -> tensor)"
    if {"model", "optimizer", "step"} <= state.keys():  # misc.engine.train's resumable state
        model = state["model"]
        net = network_of(set(model)) if isinstance(model, dict) else None
        step = f" at step {state['step']}" + (f" of {state['max_step']}" if "max_step" in state else "")
        return (f"is a resumable training state{step} (model, optimizer, RNG) of "
                f"{net or 'a network'}, which training writes every --checkpoint_every steps "
                f"and deletes when it finishes, not the final weights")
    if {"state", "param_groups"} <= state.keys():
        return "holds an optimizer state_dict (state, param_groups), not network weights"
    odd = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if odd:
        return (f"holds a dict with entries that are not named tensors ({odd[:5]}), not a "
                f"state_dict")
    return None


def read_weights(path: str | Path, fix: str) -> dict[str, torch.Tensor]:
    """The state_dict in `path` (weights only). A file that is missing, unreadable or not a
    state_dict raises MissingInput / BadInput naming the file, what it holds and `fix`
    (e.g. which flag takes which file). A dict whose only use is to wrap the weights under
    "model" (as some released checkpoints are saved) is unwrapped."""
    path = Path(path)
    state = _torch_load(path, f"weights file {path} not found. {fix}",
                        f"cannot read weights file {path}", fix)
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "step" not in state:
        state = state["model"]
    if (why := _not_weights(state)) is not None:
        raise BadInput(f"weights file {path} {why}. {fix}")
    return state


def _torch_load(path: Path, not_found: str, unreadable: str, fix: str) -> object:
    """torch.load(weights_only=True) of `path`, with MissingInput(`not_found`) for a missing
    file and BadInput("`unreadable`: it <what the file is>. `fix`") for one it refuses."""
    if not path.is_file():
        raise MissingInput(not_found)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInput(f"{unreadable}: it {_read_failure(path, err)}. {fix}") from err


def _canonical_state(state: dict[str, torch.Tensor], own: set[str], keys: CheckpointKeys,
                     ignore_prefixes: tuple[str, ...], path: Path, made_by: str
                     ) -> dict[str, torch.Tensor]:
    """`state` with ignored keys dropped and alias keys folded (CheckpointKeys)."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    for key in [k for k in state if k not in own]:
        alias = next((a for a in keys.aliases if key.startswith(a)), None)
        if alias is None:
            continue
        canonical = keys.aliases[alias] + key[len(alias):]
        value = state.pop(key)
        if canonical not in state:
            state[canonical] = value
        elif not torch.equal(value, state[canonical]):  # checked, not just one taken
            raise BadInput(
                f"checkpoint {path}: {key} and {canonical} must be the same tensor (the "
                f"reference saves {alias}* as another name of {keys.aliases[alias]}*) but "
                f"differ, so the file was altered: rerun {made_by} or pass an unaltered file")
    return state


def _check_shared_tensors(state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                          path: Path, made_by: str) -> None:
    """Keys that name one tensor of the model (module lists registered over the same modules,
    as in AMN and IRN) must hold equal values in the file: load_state_dict would silently keep
    the last one, so a disagreement is an error instead."""
    first: dict[tuple, str] = {}
    for key, tensor in own.items():
        if tensor.numel() == 0:
            continue
        seen = first.setdefault((tensor.data_ptr(), tuple(tensor.shape)), key)
        if seen != key and not torch.equal(state[key], state[seen]):
            raise BadInput(
                f"checkpoint {path}: {seen} and {key} name the same tensor of the network but "
                f"differ in the file, so it was altered: rerun {made_by} or pass an unaltered "
                f"file")


def select_prefix(state: dict[str, torch.Tensor], prefix: str, path: Path,
                  missing: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under `prefix`, the prefix stripped (e.g. the teacher a BAO
    checkpoint holds under `teacher.`); BadInput naming the file and `missing` (what to do)
    when there is none."""
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not picked:
        raise BadInput(f"checkpoint {path} holds no weights under {prefix}* ({len(state)} keys "
                       f"of one network): {missing}")
    return picked


def load_checkpoint(model: torch.nn.Module, path: str | Path, made_by: str,
                    ignore_prefixes: tuple[str, ...] = (), prefix: str = "",
                    missing_prefix: str = "") -> None:
    """Load a state_dict strictly; errors name the file, what it holds and how to fix it.

    `ignore_prefixes` names keys a reference checkpoint may carry that the model does not need
    (e.g. IRN's loss buffers); they are dropped by name. `prefix`: load the entries under it
    instead (prefix stripped; `missing_prefix` says what to do when there is none). The
    model's `checkpoint_keys` (CheckpointKeys) maps the reference's alias keys; everything
    else must match. A failed load changes neither the file nor the model."""
    path = Path(path)
    state = _torch_load(path, f"checkpoint {path} not found: run {made_by} first",
                        f"cannot read checkpoint {path}",
                        f"Rerun {made_by} to write it again, or pass a complete copy")
    net = f"{type(model).__module__}.{type(model).__name__}"
    if (why := _not_weights(state)) is not None:
        if "resumable training state" in why:  # misc.engine.train names it <final stem>.state.pth
            name = path.name
            final = f" ({name.removesuffix('.state.pth')}.pth)" if name.endswith(".state.pth") else ""
            fix = (f"pass the final checkpoint{final} that {made_by} writes when it finishes "
                   f"(rerunning it continues from this state)")
        else:
            fix = f"pass the weights file that {made_by} writes (rerun it if there is none)"
        raise BadInput(f"checkpoint {path} {why}; {net} needs network weights: {fix}")
    if prefix:
        state = select_prefix(state, prefix, path, missing_prefix)
    own = model.state_dict()
    state = _canonical_state(state, set(own), getattr(model, "checkpoint_keys", CheckpointKeys()),
                             ignore_prefixes, path, made_by)
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    bad_shape = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in sorted(own.keys() & state.keys()) if own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        theirs, ours = network_of(set(state)), network_of(set(own))
        looks = f" its keys look like {theirs}, not like this network's;" if theirs != ours else ""
        raise BadInput(
            f"checkpoint {path} does not fit {net}:{looks} missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {bad_shape[:5]} (another network or class "
            f"count?). Rerun {made_by} or pass the right weights file.")
    _check_shared_tensors(state, own, path, made_by)
    model.load_state_dict(state)


TEACHER_PREFIX = "teacher."  # BAO checkpoints: the teacher's keys, beside the student's


def load_bao_checkpoint(model: torch.nn.Module, path: str | Path, which: str,
                        made_by: str) -> None:
    """The student (every key but teacher.*) or the teacher (the teacher.* keys, `which`
    "teacher") of a BAO checkpoint (docs/bao.md §4.2), strictly; a file of one network (BAO's
    released weights) holds a student only."""
    if which == "student":
        load_checkpoint(model, path, made_by=made_by, ignore_prefixes=(TEACHER_PREFIX,))
        return
    load_checkpoint(model, path, made_by=made_by, prefix=TEACHER_PREFIX, missing_prefix=(
        f"--bao_infer_model teacher needs the teacher that {made_by} saves beside the student; "
        f"a file of one network (BAO's released weights) takes --bao_infer_model student"))
