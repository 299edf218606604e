"""Mutation testing of one module against the tests that cover it (mutmut, not in CI: slow).

    python -m tools.mutate misc/io/records.py            # the covering tests from TARGETS
    python -m tools.mutate misc/io/records.py --tests tests/test_records.py tests/test_plan.py
    python -m tools.mutate --all                         # every module of TARGETS, in turn
    python -m tools.mutate step/driver/plan.py --lines 35-70,413-470   # those lines' mutants only

mutmut changes the source on disk, so the run happens in a scratch copy of the tracked files:
the working tree is never mutated, even when a run is killed. Each mutant (one small change:
an operator, a constant, a keyword) runs the covering tests; a mutant that every test passes
"survived". Survivors that cannot change behaviour are listed, with the reason, in
tools/mutation_equivalents.toml; the score is killed / (mutants - equivalent). The run writes
result/mutation/<module>.md (the survivors' diffs) and updates result/mutation/summary.json.
docs/mutation.md explains how to read and act on them.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.toml"
OUT = ROOT / "result" / "mutation"

# module -> the test files that cover it: the modules that decide numbers and provenance
TARGETS: dict[str, list[str]] = {
    "misc/io/records.py": ["tests/test_records_mutants.py"],
    "step/driver/plan.py": ["tests/test_plan_disk.py", "tests/test_plan.py",  # -x: disk first
                            "tests/test_plan_mutants.py"],
    "misc/io/maps.py": ["tests/test_maps_mutants.py"],
    "misc/eval/metrics.py": ["tests/test_metrics_mutants.py", "tests/test_metrics.py"],
    "misc/eval/ins_eval.py": ["tests/test_ins_eval_mutants.py", "tests/test_ins_eval.py"],
    "misc/irn/ins_seg.py": ["tests/test_ins_seg_mutants.py", "tests/test_ins_seg.py"],
    "misc/irn/random_walk.py": ["tests/test_random_walk_mutants.py"] + [
        "tests/test_random_walk.py::" + t for t in (
            "test_operator_is_row_stochastic_and_local", "test_full_boundary_blocks_everything",
            "test_bad_shapes")],
    "misc/irn/path_index.py": ["tests/test_path_index_mutants.py"] + [
        "tests/test_path_index.py::" + t for t in (  # all but the 7 s gradcheck
            "test_direction_counts_and_order", "test_direction_path", "test_path_lengths_r10",
            "test_sources_128", "test_pair_labels_match_loop", "test_affinity_matches_loop",
            "test_displacement_pairs_match_loop", "test_shape_errors")],
    "misc/engine/losses.py": ["tests/test_losses_mutants.py", "tests/test_irn_loss.py",
                              "tests/test_puf.py"] + [
        "tests/test_amn.py::" + t for t in (
            "test_loss_matches_direct_formula", "test_smoothed_targets_0_6_and_0_02_are_the_optimum",
            "test_no_foreground_or_background_gives_no_nan", "test_nearest_indices_match_pil",
            "test_downsample_labels_picks_pil_pixels")],
    "coco14/prepare.py": ["tests/test_coco14_prepare_mutants.py", "tests/test_coco14.py"],
    "misc/eval/coco_export.py": ["tests/test_coco_export_mutants.py", "tests/test_coco_export.py"],
    "misc/report/repeats.py": ["tests/test_repeats_mutants.py", "tests/test_bao_claims.py",
                               "tests/test_pmm_claims.py"] + [
        "tests/test_repeats.py::" + t for t in (  # all but the two runs on the tiny toy
            "test_insert_folder_and_dataset_folders_agree",
            "test_seed_argv_moves_every_output_into_the_seed_folder",
            "test_aggregate_is_exact_over_hand_written_files",
            "test_claims_are_paired_effects_with_a_two_std_verdict",
            "test_finished_means_report_and_marker_of_the_same_command")],
    "misc/engine/train.py": ["tests/test_train_mutants.py"],
    "misc/engine/dist.py": ["tests/test_dist_mutants.py"],
}

# mutmut's statuses, as its cache stores them
KILLED, SURVIVED, TIMEOUT, SUSPICIOUS = "ok_killed", "bad_survived", "bad_timeout", "ok_suspicious"
UNTESTED, SKIPPED = "untested", "skipped"


def scratch_copy(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, copied to dest."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider"]  # stop at the first failure, no cache


def serve(sock_path: str, module: str | None = None) -> None:
    """Fork one pytest per request, after importing the heavy libraries once.

    Importing torch and collecting dominates a small module's test time, so the server imports
    the third-party libraries (never a project module: each child must import the mutated source
    from disk) and forks a child per mutant. A request is {"args", "cwd", "client"}; the reply is
    pytest's exit code. The child is killed when its client is (mutmut's timeout kills the client).

    Two costs of a child are taken away as well: the garbage collections pytest forces (over the
    heap of torch, seconds each) by freezing the server's objects, and recompiling every module by
    letting the children write bytecode in the scratch copy; the mutated module's cached bytecode
    is deleted before each run (mutmut can write two mutants of equal size within one second,
    which a timestamp-checked .pyc cannot tell apart).
    """
    import matplotlib
    matplotlib.use("Agg")  # the report modules' backend (misc.report.run_report._plt)
    import matplotlib.pyplot  # noqa: F401
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import pytest
    import scipy.ndimage  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  (the first optimiser built imports it: seconds per child)
    # its first call imports torch.distributed.tensor (~5 s): once here, not once per mutant
    torch.testing.assert_close(torch.zeros(1), torch.zeros(1))
    gc.freeze()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        request = json.loads(conn.makefile().readline())
        pid = os.fork()
        if pid == 0:
            os.chdir(request["cwd"])
            sys.dont_write_bytecode = False
            if module:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(importlib.util.cache_from_source(os.path.abspath(module)))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os._exit(int(pytest.main(request["args"])))
        code = wait_for(pid, request["client"])
        try:
            conn.sendall(f"{code}\n".encode())
        except OSError:  # the client was killed (mutmut's timeout): nobody to answer
            pass
        conn.close()


def wait_for(child: int, client: int) -> int:
    """The child's exit code; kills it (and answers 1) once the client process is gone."""
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        try:
            os.kill(client, 0)
        except ProcessLookupError:
            os.kill(child, 9)
            os.waitpid(child, 0)
            return 1
        time.sleep(0.02)


def client(sock_path: str, tests: list[str]) -> int:
    """mutmut's runner: ask the server for one pytest run of tests; its exit code."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    request = {"args": PYTEST_ARGS + tests, "cwd": os.getcwd(), "client": os.getpid()}
    conn.sendall((json.dumps(request) + "\n").encode())
    code = int(conn.makefile().readline())
    # mutmut counts exit status 1 only as a kill; pytest answers 2 when collection fails (a
    # mutant that does not compile or import), which the tests catch too. 5 (no tests ran)
    # stays as it is: never a kill.
    return 1 if code not in (0, 5) else code


TRACEBACK = "Traceback (most recent call last):"
CRASH_GRACE_S = 30.0  # how long a mutmut that printed a traceback may take to exit on its own
ATTEMPTS = 3  # mutmut runs per module: a crashed run is resumed from its cache


def watch(cmd: list[str], cwd: Path, grace: float = CRASH_GRACE_S) -> tuple[int | None, str]:
    """Run cmd in its own process group, echoing its output; (exit code, traceback text).

    mutmut 2.5.1 crashes in its cache (`ValueError: Attribute Mutant.line is required` in
    update_mutant_status, `assert line` in its worker) when the cache's lines are re-keyed
    while a mutant is on disk: `mutmut show` / `mutmut apply` call update_line_numbers, which
    re-reads the source file, so one run in the live scratch copy (to peek at a survivor)
    replaces the mutated line's row and the original line is no longer found. It then hangs in
    its queues' teardown instead of exiting. A run whose output shows a traceback is given
    `grace` seconds to exit; after that its whole group (mutmut, its worker, the runner) is
    killed and the exit code is None. The traceback text (from its first line on) is returned,
    "" when there was none."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    crashed_at = None
    while proc.poll() is None:
        if crashed_at is None and any(line.startswith(TRACEBACK) for line in lines):
            crashed_at = time.monotonic()
        if crashed_at is not None and time.monotonic() - crashed_at > grace:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    reader.join(timeout=5)
    code = None if crashed_at is not None and proc.returncode < 0 else proc.returncode
    first = next((i for i, line in enumerate(lines) if line.startswith(TRACEBACK)), None)
    return code, "" if first is None else "".join(lines[first:])


def run_mutmut(work: Path, module: str, tests: list[str]) -> None:
    """mutmut over module's mutants in the scratch copy `work`, against the pytest server.

    A run that crashed (printed a traceback) is killed if it stalls and resumed: mutmut's cache
    keeps every tested mutant's status, so the rerun tests only the mutants left untested. A
    mutant file left mutated by the killed run is restored first. After ATTEMPTS crashes, or
    when the pytest server died (every later mutant would count as killed), this raises."""
    sock_path = str(work / ".pytest-server")
    server = subprocess.Popen([sys.executable, "-m", "tools.mutate", "--serve", sock_path, module],
                              cwd=work)
    try:
        while not os.path.exists(sock_path):
            time.sleep(0.1)
        runner = f"{sys.executable} -m tools.mutate --client {sock_path} " + " ".join(tests)
        cmd = [sys.executable, "-m", "mutmut", "run", "--paths-to-mutate", module,
               "--runner", runner, "--tests-dir", "tests", "--no-progress", "--simple-output",
               # generous timeouts: the machine is often shared; a slow mutant is not a killed one
               "--test-time-multiplier", "4", "--test-time-base", "20"]
        for attempt in range(1, ATTEMPTS + 1):
            _, crash = watch(cmd, work)
            if server.poll() is not None:  # every mutant after its death would count as killed
                raise RuntimeError(f"the pytest server died during the run (exit "
                                   f"{server.returncode}): the kills counted after it are not "
                                   "real; rerun")
            if not crash:
                return
            backup = work / (module + ".bak")
            if backup.is_file():  # killed while a mutant was on disk
                os.replace(backup, work / module)
            print(f"mutmut crashed (attempt {attempt} of {ATTEMPTS}); resuming from its cache",
                  flush=True)
        raise RuntimeError(f"mutmut crashed {ATTEMPTS} times on {module}; the last traceback:\n"
                           f"{crash}")
    finally:
        server.kill()


def parse_lines(spec: str) -> list[tuple[int, int]]:
    """"36-66,413-470" -> [(36, 66), (413, 470)]: 1-based inclusive line ranges."""
    ranges = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return ranges


def restrict_to(work: Path, ranges: list[tuple[int, int]]) -> None:
    """Have mutmut skip (status "skipped", no test run) every mutant outside `ranges`: a
    mutmut_config.py in the scratch copy, whose pre_mutation hook mutmut calls per mutant."""
    (work / "mutmut_config.py").write_text(
        f"RANGES = {ranges!r}\n\n\n"
        "def pre_mutation(context):\n"
        "    line = context.mutation_id.line_number + 1  # mutmut counts from 0\n"
        "    if not any(first <= line <= last for first, last in RANGES):\n"
        "        context.skip = True\n")


def untested(rows: list[tuple[int, str]]) -> list[int]:
    """The ids of mutants mutmut never tested (a run that stopped early)."""
    return [mid for mid, status in rows if status == UNTESTED]


def mutants(work: Path, module: str) -> list[tuple[int, str]]:
    """(mutmut id, status) of every mutant of module in the scratch copy's cache, on a line
    that the source holds as cached: a crash resumed after the cache was re-keyed from a
    mutated file (see `watch`) leaves rows of that mutated text, which no run tests."""
    source = (work / module).read_text().split("\n")
    con = sqlite3.connect(work / ".mutmut-cache")
    rows = con.execute(
        "SELECT m.id, m.status, l.line, l.line_number FROM Mutant m JOIN Line l ON m.line = l.id "
        "JOIN SourceFile s ON l.sourcefile = s.id WHERE s.filename = ?", (module,)).fetchall()
    con.close()
    kept = [(mid, status) for mid, status, line, number in rows
            if number < len(source) and source[number] == line]
    if len(kept) < len(rows):
        print(f"{len(rows) - len(kept)} cached mutants of {module} sit on lines the source no "
              f"longer holds (a re-keyed cache): left out", flush=True)
    return sorted(kept)


def diff(work: Path, mutant_id: int) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", "show", str(mutant_id)], cwd=work,
                          capture_output=True, text=True).stdout


def changed_lines(unified: str) -> tuple[str, str]:
    """(original, mutated) line of a one-line mutant's diff, stripped."""
    old = [ln[1:].strip() for ln in unified.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in unified.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return " / ".join(old), " / ".join(new)


def load_equivalents() -> dict[str, list[dict]]:
    """module -> [{original, mutated, reason}]: survivors that cannot change behaviour."""
    if not EQUIVALENTS.exists():
        return {}
    return tomllib.loads(EQUIVALENTS.read_text()).get("module", {})


def is_equivalent(entry: tuple[str, str], listed: list[dict], text: str = "") -> dict | None:
    """The listed equivalent of a mutant's (original, mutated) line; an entry with `near`
    (for a line that occurs more than once, e.g. a bare `continue`) also needs that text in
    the mutant's diff (its context lines)."""
    entry = (entry[0].strip(), entry[1].strip())  # a removed decorator's " / @torch.no_grad()"
    return next((e for e in listed if (e["original"].strip(), e["mutated"].strip()) == entry
                 and e.get("near", "") in text), None)


def mutate(module: str, tests: list[str], lines: str | None = None) -> dict:
    """Run mutmut on module in a scratch copy; write its survivors; return its score row.
    `lines` ("36-66,413-470"): only the mutants on those lines are tested; the row, its
    report and its summary key say so (`<module>:<lines>`)."""
    start = time.time()
    listed = load_equivalents().get(module, [])
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        work = Path(tmp)
        scratch_copy(work)
        if lines:
            restrict_to(work, parse_lines(lines))
        run_mutmut(work, module, tests)
        everything = mutants(work, module)
        rows = [(mid, status) for mid, status in everything if status != SKIPPED]
        if untested(rows):
            raise RuntimeError(f"mutmut left {len(untested(rows))} of {len(rows)} mutants of "
                               f"{module} untested (ids {untested(rows)[:10]}...): no report")
        survivors, equivalent = [], []
        for mid, status in rows:
            if status == KILLED:
                continue
            text = diff(work, mid)
            # a listed mutant that timed out is still equivalent: the hang is the harness's
            # (e.g. a loader worker forked from the forked pytest child), not a test's verdict
            entry = (is_equivalent(changed_lines(text), listed, text)
                     if status in (SURVIVED, TIMEOUT) else None)
            if entry:
                equivalent.append((text, entry["reason"] + (" (timed out in the run)"
                                                            if status == TIMEOUT else "")))
            else:
                survivors.append((status, text))
    killed = sum(status == KILLED for _, status in rows)
    timeouts = sum(status == TIMEOUT for status, _ in survivors)
    judged = len(rows) - len(equivalent)
    row = {"module": module, "tests": tests, "mutants": len(rows), "killed": killed,
           "timeout": timeouts, "equivalent": len(equivalent),
           "survived": len(survivors) - timeouts,  # untested and suspicious ones included
           # a mutant that hangs the tests is caught too: the run fails
           "score": round((killed + timeouts) / judged, 4) if judged else 1.0,
           "seconds": round(time.time() - start, 1)}
    if lines:
        row.update(lines=lines, skipped=len(everything) - len(rows), key=f"{module}:{lines}")
    write_report(module, row, survivors, equivalent)
    return row


def write_report(module: str, row: dict, survivors: list, equivalent: list) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"# Mutation testing of {module}", "",
             f"tests: {' '.join(row['tests'])}", ""]
    if "lines" in row:
        lines += [f"lines {row['lines']} only: {row['skipped']} mutants elsewhere skipped", ""]
    lines += [
             f"mutants {row['mutants']}, killed {row['killed']}, timeout {row['timeout']}, "
             f"equivalent {row['equivalent']}, survived {row['survived']}: "
             f"score {row['score']:.1%} in {row['seconds']} s", "", "## Survivors", ""]
    for status, text in survivors:
        lines += [f"({status})", "```diff", text.strip(), "```", ""]
    lines += ["## Equivalent (tools/mutation_equivalents.toml)", ""]
    for text, reason in equivalent:
        lines += [f"reason: {reason}", "```diff", text.strip(), "```", ""]
    key = row.get("key", module)
    name = module.removesuffix(".py").replace("/", ".")
    if "lines" in row:
        name += ".lines-" + row["lines"].replace(",", "_")
    (OUT / (name + ".md")).write_text("\n".join(lines))
    summary_path = OUT / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary[key] = row
    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("module", nargs="?", help="a source path, e.g. misc/io/records.py")
    p.add_argument("--tests", nargs="+", help="the covering test files (default: TARGETS)")
    p.add_argument("--all", action="store_true", help="every module of TARGETS")
    p.add_argument("--lines", help="only the mutants on these 1-based line ranges, e.g. "
                                   "36-66,413-470 (a module too slow to run whole)")
    p.add_argument("--serve", metavar="SOCKET", help=argparse.SUPPRESS)
    p.add_argument("--client", metavar="SOCKET", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.serve:
        serve(args.serve, args.module)
        return 0
    if args.client:
        return client(args.client, [args.module, *rest] if args.module else rest)
    if rest:
        p.error(f"unknown arguments {rest}")
    if args.all == bool(args.module):
        p.error("give one module or --all")
    modules = list(TARGETS) if args.all else [args.module]
    for module in modules:
        tests = args.tests or TARGETS.get(module)
        if not tests:
            p.error(f"{module}: not in tools/mutate.py TARGETS; name its tests with --tests")
        if not (ROOT / module).is_file():
            p.error(f"{module}: no such file under {ROOT}")
        row = mutate(module, tests, args.lines)
        print(f"{module}: {row['killed'] + row['timeout']}/{row['mutants'] - row['equivalent']} "
              f"killed ({row['score']:.1%}), {row['equivalent']} equivalent, "
              f"{row['survived']} survived, {row['seconds']} s -> {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
