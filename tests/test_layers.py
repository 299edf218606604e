"""The architecture, enforced: layers run one way (packages, and misc/'s subpackages among
themselves), no import cycle between any two modules, only run_sample.py and step/ read the
flags, and every flag of the parser is read somewhere (docs/README.md, "Layout")."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import run_sample
from tests.tiny import REPO

# package (or subpackage) -> rank; a module may import modules of its own (sub)package, or of
# one with a lower rank. The most specific prefix decides (misc.io before misc).
LAYERS = {"run_sample": 60, "step": 50, "step.driver": 40, "data": 30,
          "net": 20, "voc12": 20, "coco14": 20,
          "misc": 10, "misc.report": 17, "misc.eval": 16, "misc.irn": 15, "misc.seeds": 14,
          "misc.data": 13, "misc.engine": 12, "misc.io": 11}
BELOW_STEP = ("net", "voc12", "coco14", "misc")
CLI_FUNCTIONS = ("main", "_main", "parse_args")  # a module's own `python -m` entry


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the layered packages (subpackages
    included; a package's __init__ is the package)."""
    mods = {"run_sample": REPO / "run_sample.py"}
    for package in {name.split(".")[0] for name in LAYERS} - {"run_sample"}:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def group_of(module: str) -> str:
    """The most specific entry of LAYERS that `module` belongs to."""
    parts = module.split(".")
    return next(".".join(parts[:n]) for n in range(len(parts), 0, -1)
                if ".".join(parts[:n]) in LAYERS)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in a file (module level or inside functions):
    `from a.b import c` counts as a.b.c when that is a module, else as a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        found |= {n for n in names if n in known or n.split(".")[0] in LAYERS}
    return found


def layer_violations(modules: dict[str, Path]) -> list[str]:
    bad, known = [], set(modules)
    for name, path in modules.items():
        own = group_of(name)
        for target in imported_modules(path, known):
            theirs = group_of(target)
            if theirs != own and LAYERS[theirs] >= LAYERS[own]:
                bad.append(f"{name} imports {target} ({theirs}: layer {LAYERS[theirs]} >= "
                           f"{LAYERS[own]})")
    return bad


def module_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Cycles in the graph module -> imported module, inside a package too (depth-first)."""
    known = set(modules)
    graph = {name: imported_modules(path, known) & known - {name}
             for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
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


def test_no_import_cycle_between_modules():
    assert module_cycles(project_modules()) == []


def test_only_run_sample_and_step_read_the_flags():
    bad = [b for name, path in project_modules().items() if name.startswith(BELOW_STEP)
           for b in flag_readers(path)]
    assert bad == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on a file that breaks its rule: an import upwards, across misc/'s
    subpackages the wrong way, and a cycle between two modules of one package."""
    (tmp_path / "up.py").write_text("def f():\n    from step.driver import context\n")
    (tmp_path / "side.py").write_text("import voc12.dataloader\n")
    assert layer_violations({"misc.up": tmp_path / "up.py"}) == [
        "misc.up imports step.driver (step.driver: layer 40 >= 10)"]
    assert layer_violations({"net.side": tmp_path / "side.py"}) != []
    (tmp_path / "low.py").write_text("from misc.eval.metrics import summary\n")
    assert layer_violations({"misc.io.low": tmp_path / "low.py",
                             "misc.eval.metrics": tmp_path / "side.py"}) != []
    (tmp_path / "a.py").write_text("from misc.irn import b\n")
    (tmp_path / "b.py").write_text("def f():\n    import misc.irn.a\n")
    assert module_cycles({"misc.irn.a": tmp_path / "a.py", "misc.irn.b": tmp_path / "b.py"}) \
        == [["misc.irn.a", "misc.irn.b", "misc.irn.a"]]
    (tmp_path / "flags.py").write_text(
        "import argparse\ndef run(args):\n    return args.x\n"
        "def g(ns: argparse.Namespace):\n    pass\n"
        "def main():\n    argparse.ArgumentParser()\n")
    found = flag_readers(tmp_path / "flags.py")
    assert any("run(args)" in f for f in found) and any("g(ns)" in f for f in found)
    assert not any(":7 " in f for f in found)  # the module's own CLI may parse its flags


def _reads(paths: list[Path]) -> tuple[set[str], list[re.Pattern]]:
    """Flags read in the given files: attributes read off `args`, getattr(args, NAME) with a
    constant or an f-string name (as patterns), and the path flags of Files(...) declarations
    (read through provenance.path_of), and `.get(NAME)` on the parsed flags (a dict). A
    flag's own declaration, Flag("name"), is no read."""
    attrs, patterns = set(), []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "args":
                attrs.add(node.attr)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "get" and node.args \
                    and isinstance(node.args[0], ast.Constant):  # the parsed flags, a dict
                attrs.add(node.args[0].value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
                name = node.args[1] if node.func.id in ("getattr", "setattr") \
                    and len(node.args) > 1 else node.args[0] if node.func.id == "Files" else None
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    attrs.add(name.value)
                elif isinstance(name, ast.JoinedStr):
                    patterns.append(re.compile("".join(
                        re.escape(v.value) if isinstance(v, ast.Constant) else r"\w+"
                        for v in name.values)))
    return attrs, patterns


def test_every_flag_is_read_somewhere():
    """No flag is accepted and silently ignored: each parser flag is read by run_sample.py or
    step/ (directly, by getattr with its name, by a computed name such as f"{name}_pass", or as
    a declared path)."""
    attrs, patterns = _reads([REPO / "run_sample.py"] + sorted((REPO / "step").rglob("*.py")))
    flags = [a.dest for a in run_sample.parser()._actions if a.dest != "help"]
    unread = [f for f in flags if f not in attrs and not any(p.fullmatch(f) for p in patterns)]
    assert unread == []
