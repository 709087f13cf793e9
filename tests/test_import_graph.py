"""vaekit's modules import each other in layers: no import circle, and imports at the top.

The graph is drawn from the source (``ast``), counting every import: those at a module's
top, those under ``if TYPE_CHECKING`` and those inside functions. An import placed inside
a function hides a circle from the reader (evaluation "never imported training" only
because its import was deferred), so each one left is listed in :data:`ALLOWED` with its
reason: an optional dependency, or a measured start-up cost.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import vaekit

ROOT = Path(vaekit.__file__).parent

# Modules whose circles and function-level imports are not checked (a name covers its
# submodules). Empty: every module is held to both rules.
PENDING: frozenset[str] = frozenset()

# Every import inside a function: (module, the module it imports, why it is not at the top).
# Start-up costs measured with `python -X importtime` on top of torch (2-core machine).
SKLEARN = "scikit-learn costs ~1.3 s of start-up; imported by the computation that needs it"
SCIPY = "scipy.stats costs ~1-3 s of start-up; imported by the one figure that needs it"
CONFIG = "reading or checking a config must not load torch (~1 s); the names are looked up when a part is built"
ALLOWED: list[tuple[str, str, str]] = [
    ("vaekit.config", "vaekit.registry", CONFIG),
    ("vaekit.config", "vaekit.optim", CONFIG),
    ("vaekit.config", "vaekit.data.stream", CONFIG),
    ("vaekit.data.named", "sklearn.datasets", SKLEARN + " (the digits dataset)"),
    ("vaekit.data.readers", "PIL", "Pillow: ~10-30 ms of every train start-up; image folders only"),
    ("vaekit.evaluate", "sklearn", SKLEARN + " (the latent classifiers)"),
    ("vaekit.latent_samplers", "sklearn", SKLEARN + " (the gmm sampler's fit)"),
    ("vaekit.latent_samplers", "zuko", 'an optional extra (pip install "vaekit[flows]")'),
    ("vaekit.plots", "scipy.stats", SCIPY),
    ("vaekit.serve.explorer", "scipy.stats", SCIPY),
    ("vaekit.report", "vaekit.disentangle.figures", "imports scikit-learn: data with factors"),
    ("vaekit.report", "vaekit.disentangle.metrics", "imports scikit-learn: data with factors"),
    (
        "vaekit.rundir",
        "vaekit.latent_samplers",
        "~20 ms of class creation that `vaekit train`, which imports rundir, never needs",
    ),
    ("vaekit.trackers", "torch.utils.tensorboard", "an optional extra (vaekit[tensorboard])"),
    ("vaekit.trackers", "mlflow", "an optional extra (vaekit[mlflow])"),
    (
        "vaekit.train.loop",
        "vaekit.training_figures",
        "matplotlib costs ~1 s of start-up; only a run with trackers draws figures",
    ),
]
# The bound on imports inside functions, for the whole package once PENDING is empty.
MAX_FUNCTION_LEVEL_IMPORTS = 20


def pending(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in PENDING)


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement names: ``from a import b`` names ``a`` and
    ``a.b`` (``b`` may be a submodule); relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports(path: Path) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement of a file, and whether it lies inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {
        id(node)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(f)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, id(node) in inner


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """The import graph between vaekit's modules, and every function-level import as
    ``(module, imported module)`` (the module a ``from X import y`` names is ``X``)."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    inner = []
    for m, path in mods.items():
        for node, in_function in imports(path):
            names = imported(m, path.name == "__init__.py", node)
            edges[m] |= {n for n in names if n in mods and n != m}
            if in_function:
                inner += [(m, n) for n in (names if isinstance(node, ast.Import) else names[:1])]
    return edges, inner


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module: the circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle_and_only_circles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(edges) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_is_in_an_import_circle() -> None:
    edges, _ = graph()
    circles = [c for c in strongly_connected(edges) if not all(pending(m) for m in c)]
    assert not circles, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in circles)


def test_imports_inside_functions_are_the_allowed_ones() -> None:
    _, inner = graph()
    checked = sorted({(m, n) for m, n in inner if not pending(m)})
    allowed = {(m, n) for m, n, _ in ALLOWED}
    unexplained = [f"{m} imports {n} in a function" for m, n in checked if (m, n) not in allowed]
    assert not unexplained, (
        "move these imports to the module's top, or list them in ALLOWED with the "
        "optional dependency or the measured start-up cost that keeps them there: "
        + "; ".join(unexplained)
    )
    stale = sorted(allowed - set(checked))
    assert not stale, f"ALLOWED lists imports that are gone: {stale}"
    count = sum(1 for m, _ in inner if not pending(m))
    assert count < MAX_FUNCTION_LEVEL_IMPORTS, count
