"""What a step module declares beside its `run(args)` (docs/pipeline.md §2.10): the flags it
owns, the flags of other steps it reads, and what it reads and writes. The parser, the output
records, the plan check and docs/flags.md are all derived from these declarations."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable


class _FromProfile:
    """The default of a flag whose value comes from the profile file (voc12, coco14, toy)."""

    def __repr__(self) -> str:
        return "PROFILE"


PROFILE: Any = _FromProfile()


def str2bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {v!r}")


def bool_or_auto(v: str | bool) -> bool | str:
    return "auto" if isinstance(v, str) and v.lower() == "auto" else str2bool(v)


@dataclass(frozen=True)
class Domain:
    """The values a numeric flag accepts (every value, for a list flag): an interval with open
    or closed ends, values outside it that keep a special meaning (`also`), and for a list
    whether it must not decrease (a (low, high) range)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()
    ordered: bool = False

    def admits(self, value: Any) -> bool:
        """Whether `value` (a number, or a list for a list flag) is in the domain."""
        if isinstance(value, (tuple, list)):
            return all(map(self.admits, value)) and (
                not self.ordered or all(a <= b for a, b in zip(value, value[1:])))
        if value in self.also:
            return True
        return ((self.low is None or value > self.low or (value == self.low and not self.low_open))
                and (self.high is None or value < self.high
                     or (value == self.high and not self.high_open)))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}" \
                   f"{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        text += "".join(f" or {v}" for v in self.also)
        return text + (", not decreasing" if self.ordered else "")


# the domains most flags take
UNIT = Domain(0, 1)                        # thresholds and scores of maps in [0, 1]
FRACTION = Domain(0, 1, high_open=True)    # probabilities, momenta, smoothing
POSITIVE = Domain(0, low_open=True)        # rates, scales, powers
NON_NEGATIVE = Domain(0)                   # weight decays, seeds, worker counts, periods
COUNT = Domain(1)                          # sizes, batches, epochs, iterations


@dataclass(frozen=True)
class Flag:
    """One command-line flag `--<name>`. `default` PROFILE: the profile file gives it.
    `shapes`: its value changes what the reading step writes, so it is part of that output's
    record (paths and lists are recorded as inputs instead, by content). `domain`: the values
    it accepts (numeric flags); a value outside it stops the call before any step runs."""
    name: str
    type: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    nargs: str | int | None = None
    choices: tuple | None = None
    metavar: str | tuple | None = None
    shapes: bool = True
    shown: str | None = None  # how a default computed on this machine reads in docs/flags.md
    domain: Domain | None = None


@dataclass(frozen=True)
class Files:
    """Files a step reads or writes, named by the path flag `flag`: a folder of `<id><suffix>`
    files, one per id of the list flag `ids`, or one file when `ids` is None."""
    flag: str
    ids: str | None = None
    suffix: str = ""
    noun: str = "file"     # what one file is, in messages ("no CAM for 3 of 240 ids")
    partial: bool = False  # a read that uses the ids present and skips the rest


@dataclass(frozen=True)
class Step:
    """A pass of the pipeline, `--<name>_pass True`.

    flags:  the flags it owns (its group in --help).
    uses:   flags owned by other steps or shared that it reads and that shape what it writes.
    reads:  inputs another pass (or the user) provides; writes: what it makes.
    trains_on: list flags whose content shapes its outputs (the ids a training step learns
        from); a folder's list is not one of them: its files are per id.
    images: list flags whose images (and image-level labels) it reads.
    unlabelled: lists among `images` whose image-level labels it does not need.
    gt:     list flags whose ground-truth PNGs it scores.
    batch:  the flag of a training pass's global batch size (its first `trains_on` list must
        hold one batch, split evenly over the processes).
    optional: left out of a whole-chain run unless given True."""
    name: str
    title: str
    flags: tuple[Flag, ...] = ()
    uses: tuple[str, ...] = ()
    also_reads: tuple[str, ...] = ()
    reads: tuple[Files, ...] = ()
    writes: tuple[Files, ...] = ()
    trains_on: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    unlabelled: tuple[str, ...] = ()
    gt: tuple[str, ...] = ()
    batch: str | None = None
    optional: bool = False

    @property
    def suffix(self) -> str:
        """The extension of the per-image files it writes ("" for a checkpoint)."""
        return next((f.suffix for f in self.writes if f.ids is not None), "")

    @property
    def trains(self) -> bool:
        """Whether it writes one checkpoint (a training step)."""
        return len(self.writes) == 1 and self.writes[0].ids is None
