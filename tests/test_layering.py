"""The package's layering: imports between packages only go down, and the command line stays light.

Layers, bottom to top (a package may import only from layers below it, function-level imports
included): the version, neutral helpers and test support; the configuration; the native ops; data;
models; the victim (training, export, serving and the defense plug-in protocol); the defenses that
plug into it; the HTTP API serving a defended victim; attacks; probes; ownership tests; experiments
(sweeps); the command line; and the package root, the facade that re-exports ``ops``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslsteal_fast"

LAYERS: dict[str, int] = {
    "_version": 0,
    "util": 1,
    "testing": 1,
    "config": 2,
    "ops": 3,
    "data": 4,
    "models": 5,
    "victim": 6,
    "defenses": 7,
    "serve": 8,  # the HTTP API: the victim's billing and the defenses behind keys
    "attacks": 9,
    "probes": 10,
    "ownership": 11,
    "sweep": 12,
    "cli": 13,
    "": 14,  # sslsteal_fast/__init__.py
    "__main__": 14,  # `python -m sslsteal_fast`, part of the facade
}
#: The compiled extension is the ops' native half.
ALIASES = {"_C": "ops"}
SUBMODULES = (set(LAYERS) | set(ALIASES)) - {""}
#: Function-level imports of the package's own modules must say why they are not at module level.
DEFERRED_REASONS = (
    "keeps `sslsteal --help` fast",
    "keeps `import sslsteal_fast` fast",
    "optional native extension",
)


def _package_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else ""


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The top-level subpackages of sslsteal_fast an import statement reaches ("" = the root)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "sslsteal_fast"]
        return [n.split(".")[1] if "." in n else "" for n in names]
    if node.level or not node.module or node.module.split(".")[0] != "sslsteal_fast":
        return []
    parts = node.module.split(".")
    if len(parts) > 1:
        return [parts[1]]
    return [a.name if a.name in SUBMODULES else "" for a in node.names]


def _edges() -> list[tuple[str, str, Path, int, bool]]:
    """(source package, target package, file, line, function-level) for every import of the package."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        deferred = {
            id(sub)
            for fn in ast.walk(tree)
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(fn)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node):
                    edges.append(
                        (_package_of(path), ALIASES.get(target, target), path, node.lineno, id(node) in deferred)
                    )
    return edges


def test_every_package_has_a_layer() -> None:
    packages = {_package_of(p) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(LAYERS), f"give these a layer in LAYERS: {sorted(packages - set(LAYERS))}"


def test_imports_only_go_down() -> None:
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {source or 'root'} -> {target or 'root'}"
        for source, target, path, line, _ in _edges()
        if source != target and LAYERS[target] >= LAYERS[source]
    ]
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, *_ in _edges():
        if source != target:
            graph.setdefault(source, set()).add(target)

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])

    for node in graph:
        visit(node, [])


def test_function_level_imports_say_why() -> None:
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            own = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)) and _targets(n)]
            body = ast.get_source_segment(text, fn) or ""
            if own and not any(reason in body for reason in DEFERRED_REASONS):
                silent.append(f"{path.relative_to(PACKAGE.parent)}:{own[0].lineno} in {fn.name}()")
    assert not silent, "function-level imports of the package without a reason:\n" + "\n".join(silent)


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)


def test_cli_and_package_import_without_the_ml_stack() -> None:
    out = _fresh_python(
        "import sys, sslsteal_fast, sslsteal_fast.cli\n"
        "sslsteal_fast.cli.build_parser()\n"
        "print(' '.join(m for m in ('torch', 'scipy', 'onnxruntime', 'sklearn', 'numpy') if m in sys.modules))"
    )
    assert out.stdout.strip() == "", f"`sslsteal --help` imports {out.stdout.strip()}"
    # (How fast that makes it is measured in benchmarks/bench_cli.py, not asserted here.)
