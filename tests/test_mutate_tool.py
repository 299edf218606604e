"""tools/mutate.py's guard around mutmut: a run that printed a traceback and stalled is killed
and reported, a clean run is left alone, and a run that left mutants untested is noticed."""
from __future__ import annotations

import sys
from types import SimpleNamespace

from tools.mutate import TRACEBACK, changed_lines, is_equivalent, parse_lines, restrict_to, untested, watch

STALL = ("import sys, time\n"
         f"print('2. Checking mutants'); print({TRACEBACK!r}); print('ValueError: boom')\n"
         "sys.stdout.flush(); time.sleep(60)\n")


def test_a_run_that_printed_a_traceback_and_stalled_is_killed_and_its_traceback_returned(tmp_path):
    code, crash = watch([sys.executable, "-c", STALL], tmp_path, grace=0.5)
    assert code is None  # killed (the child would sleep 60 s, then exit 0)
    assert crash == f"{TRACEBACK}\nValueError: boom\n"  # from the traceback's first line on


def test_a_clean_run_keeps_its_exit_code_and_reports_no_traceback(tmp_path):
    assert watch([sys.executable, "-c", "print('done'); raise SystemExit(3)"], tmp_path) == (3, "")


def test_a_run_that_exits_after_its_traceback_keeps_its_code_and_the_traceback(tmp_path):
    code, crash = watch([sys.executable, "-c", "raise ValueError('x')"], tmp_path, grace=5)
    assert code == 1 and crash.startswith(TRACEBACK) and crash.endswith("ValueError: x\n")


def test_mutants_left_untested_are_listed_by_id():
    rows = [(1, "ok_killed"), (2, "untested"), (3, "bad_survived"), (4, "untested")]
    assert untested(rows) == [2, 4]
    assert untested([(1, "ok_killed")]) == []


def test_a_line_restriction_skips_the_mutants_outside_its_ranges(tmp_path):
    assert parse_lines("35-70,413-470,9") == [(35, 70), (413, 470), (9, 9)]
    restrict_to(tmp_path, [(35, 70), (9, 9)])
    hook: dict = {}
    exec((tmp_path / "mutmut_config.py").read_text(), hook)

    def skipped(line_1_based: int) -> bool:
        context = SimpleNamespace(mutation_id=SimpleNamespace(line_number=line_1_based - 1),
                                  skip=False)
        hook["pre_mutation"](context)
        return context.skip
    assert [skipped(n) for n in (8, 9, 10, 34, 35, 70, 71)] == [True, False, True, True, False,
                                                              False, True]


def test_an_equivalent_with_near_matches_only_the_mutant_next_to_that_text():
    listed = [{"original": "continue", "mutated": "break", "near": "if path is None:", "reason": "r"}]
    here = " x\n     if path is None:\n-        continue\n+        break\n"
    there = " x\n     if other:\n-        continue\n+        break\n"
    assert is_equivalent(changed_lines(here), listed, here) is listed[0]
    assert is_equivalent(changed_lines(there), listed, there) is None
