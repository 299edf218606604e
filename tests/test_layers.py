"""The architecture, enforced: layers run one way, only run_sample.py and step/ read the flags,
and every flag of the parser is read somewhere (docs/README.md, "Layout")."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import run_sample
from tests.tiny import REPO

# package -> layer; a module may import its own package or packages of a lower layer only
LAYERS = {"run_sample": 4, "step": 3, "data": 3, "net": 2, "voc12": 2, "coco14": 2, "misc": 1}
BELOW_STEP = ("net", "voc12", "coco14", "misc")
CLI_FUNCTIONS = ("main", "_main", "parse_args")  # a module's own `python -m` entry


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the layered packages."""
    mods = {"run_sample": REPO / "run_sample.py"}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            mods[".".join(path.relative_to(REPO).with_suffix("").parts)] = path
    return mods


def imported_packages(path: Path) -> set[str]:
    """Project packages imported anywhere in a file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in LAYERS}
    return found


def layer_violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in modules.items():
        own = name.split(".")[0]
        for target in imported_packages(path):
            if target != own and LAYERS[target] >= LAYERS[own]:
                bad.append(f"{name} imports {target} (layer {LAYERS[target]} >= {LAYERS[own]})")
    return bad


def package_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Cycles in the graph package -> imported package (depth-first search)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own = name.split(".")[0]
        graph.setdefault(own, set()).update(imported_packages(path) - {own})
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for package in sorted(graph):
        if package not in state:
            visit(package, [package])
    return cycles


def flag_readers(path: Path) -> list[str]:
    """Places below step/ that read an argparse namespace: a parameter called `args` or typed
    Namespace, or argparse used outside a module's own command-line entry."""
    tree = ast.parse(path.read_text())
    bad = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for arg in fn.args.args + fn.args.kwonlyargs:
            if arg.arg == "args" or "Namespace" in ast.unparse(arg.annotation or ast.Constant(0)):
                bad.append(f"{path.name}:{fn.lineno} {fn.name}({arg.arg})")
    cli_nodes = {id(n) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                 and fn.name in CLI_FUNCTIONS for n in ast.walk(fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "argparse" and id(node) not in cli_nodes:
            bad.append(f"{path.name}:{node.lineno} argparse outside {CLI_FUNCTIONS}")
    return bad


def test_layers_run_one_way():
    assert layer_violations(project_modules()) == []


def test_no_import_cycle_between_packages():
    assert package_cycles(project_modules()) == []


def test_only_run_sample_and_step_read_the_flags():
    bad = [b for name, path in project_modules().items() if name.startswith(BELOW_STEP)
           for b in flag_readers(path)]
    assert bad == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on a file that breaks its rule."""
    (tmp_path / "up.py").write_text("def f():\n    from step.common import dataset\n")
    (tmp_path / "side.py").write_text("import voc12.dataloader\n")
    assert layer_violations({"misc.up": tmp_path / "up.py"}) == [
        "misc.up imports step (layer 3 >= 1)"]
    assert layer_violations({"net.side": tmp_path / "side.py"}) != []
    (tmp_path / "a.py").write_text("import voc12\n")
    (tmp_path / "b.py").write_text("import net\n")
    assert package_cycles({"net.a": tmp_path / "a.py", "voc12.b": tmp_path / "b.py"}) != []
    (tmp_path / "flags.py").write_text(
        "import argparse\ndef run(args):\n    return args.x\n"
        "def g(ns: argparse.Namespace):\n    pass\n"
        "def main():\n    argparse.ArgumentParser()\n")
    found = flag_readers(tmp_path / "flags.py")
    assert any("run(args)" in f for f in found) and any("g(ns)" in f for f in found)
    assert not any(":7 " in f for f in found)  # the module's own CLI may parse its flags


def _reads(paths: list[Path]) -> tuple[set[str], list[re.Pattern]]:
    """Attribute names read off `args`, string constants, and f-string patterns (getattr with
    a computed name) in the given files."""
    attrs, patterns = set(), []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "args":
                attrs.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                attrs.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+"
                         for v in node.values]
                fixed = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if sum(c.isalpha() for c in fixed) >= 3:  # f"{x}" alone would match any flag
                    patterns.append(re.compile("".join(parts)))
    return attrs, patterns


def test_every_flag_is_read_somewhere():
    """No flag is accepted and silently ignored: each parser flag is read by run_sample.py or
    a step (directly, by getattr with its name, or by a computed name such as f"{name}_pass")."""
    attrs, patterns = _reads([REPO / "run_sample.py"] + sorted((REPO / "step").glob("*.py")))
    flags = [a.dest for a in run_sample.build_parser()._actions if a.dest != "help"]
    unread = [f for f in flags if f not in attrs and not any(p.fullmatch(f) for p in patterns)]
    assert unread == []
