"""The package's shape: the import graph of ``mulens_sbi`` is acyclic and follows the layer order of
docs/architecture.md, and no module imports another module's private names.

The graph is built from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a file, inside function bodies and ``if TYPE_CHECKING:`` blocks
included, relative imports resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mulens_sbi

PACKAGE = Path(mulens_sbi.__file__).resolve().parent
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

#: The layers, bottom to top (docs/architecture.md, "Layers", lists the same, in the same order).
#: A module may import modules of its own layer and of the layers below it, never above. Entries
#: are module or package names relative to ``mulens_sbi`` (a package stands for everything in it);
#: ``mulens_sbi`` is the package's own ``__init__`` (``__version__`` and the light-curve functions).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("params", "conventions", "settings_file")),
    ("lensing", ("lensing",)),
    ("forward model", ("lightcurve", "mulens_sbi")),
    ("survey", ("survey",)),
    ("observations", ("event", "preprocess")),
    ("readers", ("readers", "io_simple")),
    ("data", ("data",)),
    ("npe", ("npe",)),
    ("posterior summaries", ("summary", "restrict", "plots")),
    ("models", ("models",)),
    ("commands over data", ("simulate", "training", "validation", "refit")),
    ("likelihood", ("likelihood", "inference")),
    ("degeneracy", ("degeneracy",)),
    ("fit", ("fit_settings", "fit")),
    ("catalog", ("catalog",)),
    ("interfaces", ("demo", "cli", "__main__")),
]

#: Inside ``data/`` (docs/architecture.md and the package docstring): each module imports only
#: modules before it in this list.
DATA_ORDER = ("parallel", "lightcurves", "classes", "conditioned", "shards", "prebin", "samplers", "stream",
              "ondevice")

#: Known imports against the layer order, (importer, imported) -> why. Keep it empty: an entry is a
#: debt with a name on it, not a permission.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: Known imports of another module's private name, (importer, "module._name") -> why.
PRIVATE_EXCEPTIONS: dict[tuple[str, str], str] = {}


# ------------------------------------------------------------------------------------------------
# the graph


@dataclass
class Graph:
    modules: dict[str, Path]
    #: importer -> {imported module: first line}
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    #: (importer, "module._name", line): private names of another module, imported or used
    private: list[tuple[str, str, int]] = field(default_factory=list)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_module_owner(module: str) -> str | None:
    """For a private module (``pkg._table``) the package it is private to, else None."""
    parts = module.split(".")
    for k, p in enumerate(parts):
        if _is_private(p):
            return ".".join(parts[:k])
    return None


def build_graph(root: Path) -> Graph:
    """The import graph of the package in the folder ``root`` (its name is the folder's)."""
    top = root.name
    g = Graph({_module_name(root, p): p for p in sorted(root.rglob("*.py"))})
    for mod, path in g.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        aliases: dict[str, str] = {}  # local name -> module it is bound to

        def add(target: str, line: int, edges=edges, mod=mod) -> None:
            if target != mod:
                edges.setdefault(target, line)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == top or a.name.startswith(top + "."):
                        add(a.name, node.lineno)
                        if a.asname:
                            aliases[a.asname] = a.name
                        else:
                            aliases[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    if node.level > 1:
                        base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not (source == top or source.startswith(top + ".")):
                    continue
                for a in node.names:
                    full = f"{source}.{a.name}"
                    if full in g.modules:  # a submodule
                        add(full, node.lineno)
                        aliases[a.asname or a.name] = full
                    else:
                        add(source, node.lineno)
                        if _is_private(a.name) and source != mod:
                            g.private.append((mod, full, node.lineno))
        # attribute access: alias._name where alias is bound to another module of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                chain, v = [], node.value
                while isinstance(v, ast.Attribute):
                    chain.append(v.attr)
                    v = v.value
                if isinstance(v, ast.Name) and v.id in aliases:
                    target = ".".join([aliases[v.id], *reversed(chain)])
                    if target in g.modules and target != mod:
                        g.private.append((mod, f"{target}.{node.attr}", node.lineno))
        # private modules used from outside the package they belong to
        for target, line in edges.items():
            owner = _private_module_owner(target)
            if owner is not None and not (mod == owner or mod.startswith(owner + ".")):
                g.private.append((mod, target, line))
        g.edges[mod] = edges
    return g


def cycles(g: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.edges.get(v, {}):
            if w not in g.modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g.modules):
        if v not in index:
            visit(v)
    return sorted(out)


def layer_of(module: str, top: str = "mulens_sbi") -> int | None:
    """The index in LAYERS of a module (longest matching entry), None when it is in none."""
    best, best_len = None, -1
    rel = "mulens_sbi" if module == top else module[len(top) + 1:]
    for k, (_, entries) in enumerate(LAYERS):
        for e in entries:
            if (rel == e or (e != "mulens_sbi" and rel.startswith(e + "."))) and len(e) > best_len:
                best, best_len = k, len(e)
    return best


def layer_violations(g: Graph) -> list[str]:
    bad = []
    for mod, targets in sorted(g.edges.items()):
        for target, line in sorted(targets.items()):
            if target not in g.modules or (mod, target) in LAYER_EXCEPTIONS:
                continue
            a, b = layer_of(mod), layer_of(target)
            if a is not None and b is not None and b > a:
                bad.append(f"{g.modules[mod].name}:{line}: {mod} ({LAYERS[a][0]}) imports {target} "
                           f"({LAYERS[b][0]}), a higher layer")
    return bad


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(PACKAGE)


# ------------------------------------------------------------------------------------------------
# the package


def test_every_module_has_a_layer(graph):
    missing = [m for m in graph.modules if layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS and docs/architecture.md): {missing}"


def test_import_graph_has_no_cycle(graph):
    assert cycles(graph) == []


def test_imports_follow_the_layer_order(graph):
    bad = layer_violations(graph)
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_data_modules_import_one_way(graph):
    data = [f"mulens_sbi.data.{m}" for m in DATA_ORDER]
    assert sorted(m for m in graph.modules if m.startswith("mulens_sbi.data.")) == sorted(data)
    bad = [f"{a} imports {b}" for a in data for b in graph.edges[a]
           if b in data and data.index(b) >= data.index(a)]
    assert not bad
    assert not graph.edges["mulens_sbi.data"], "mulens_sbi/data/__init__.py imports nothing"


def test_layer_exceptions_are_still_needed(graph):
    for mod, target in LAYER_EXCEPTIONS:
        assert target in graph.edges.get(mod, {}), f"{mod} no longer imports {target}: remove its exception"


def test_no_private_name_crosses_a_module_border(graph):
    bad = [f"{graph.modules[m].name}:{line}: {m} uses {name}" for m, name, line in graph.private
           if (m, name) not in PRIVATE_EXCEPTIONS]
    assert not bad, "private names used across modules (make them public or move them):\n" + "\n".join(bad)


def test_private_exceptions_are_still_needed(graph):
    used = {(m, name) for m, name, _ in graph.private}
    stale = [k for k in PRIVATE_EXCEPTIONS if k not in used]
    assert not stale, f"exceptions no longer needed (remove them): {stale}"


def test_architecture_doc_lists_the_same_layers():
    """docs/architecture.md's layer table has one row per layer, bottom to top, naming the same
    modules as LAYERS (packages with a trailing slash)."""
    rows = []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            names = tuple(n.strip("`/ ") for n in re.findall(r"`[^`]+`", m.group(3)))
            rows.append((int(m.group(1)), m.group(2), names))
    assert [r[0] for r in rows] == list(range(1, len(LAYERS) + 1))
    assert [(r[1], r[2]) for r in rows] == [(name, entries) for name, entries in LAYERS]


# ------------------------------------------------------------------------------------------------
# the checker itself, on a made-up package


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_sees_deferred_relative_and_package_imports(tmp_path):
    pkg = _write(tmp_path / "toy", {
        "__init__.py": "",
        "a.py": "def f():\n    from toy.b import g\n    return g\n",
        "b.py": "from . import c\n\ndef g():\n    from .a import f\n",
        "c.py": "",
        "sub/__init__.py": "from .d import x\n",
        "sub/d.py": "from ..c import y\nx = 1\n",
    })
    g = build_graph(pkg)
    assert set(g.edges["toy.a"]) == {"toy.b"}
    assert set(g.edges["toy.b"]) == {"toy.c", "toy.a"}
    assert set(g.edges["toy.sub"]) == {"toy.sub.d"}
    assert set(g.edges["toy.sub.d"]) == {"toy.c"}
    assert cycles(g) == [["toy.a", "toy.b"]]


def test_checker_sees_private_names(tmp_path):
    pkg = _write(tmp_path / "toy", {
        "__init__.py": "__version__ = '1'\n",
        "a.py": "_hidden = 1\nshown = 2\n",
        "b.py": ("from toy import __version__\nfrom toy.a import _hidden, shown\nimport toy.a as am\n"
                 "from toy import a\n\ndef f():\n    return am._hidden + a._hidden + a.shown\n"),
        "p/__init__.py": "",
        "p/_impl.py": "z = 1\n",
        "p/q.py": "from toy.p._impl import z\n",
        "c.py": "from toy.p._impl import z\n",
    })
    g = build_graph(pkg)
    found = sorted((m, name) for m, name, _ in g.private)
    assert found == [("toy.b", "toy.a._hidden")] * 3 + [("toy.c", "toy.p._impl")]


def test_every_public_name_resolves(graph):
    """Each module's ``__all__`` names exist (MulensModel's check, over every module)."""
    missing = []
    for mod in sorted(graph.modules):
        if mod.endswith("__main__"):
            continue
        m = importlib.import_module(mod)
        missing += [f"{mod}.{n}" for n in getattr(m, "__all__", ()) if not hasattr(m, n)]
    assert not missing, f"names in __all__ that do not exist: {missing}"


def test_readme_test_command_is_what_ci_runs():
    """README's second set-up command runs the same pytest commands as .ci/run, in the same order."""
    root = PACKAGE.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    readme_runs = [c.strip() for c in block[1].split("&&") if "pytest" in c]
    ci_runs = [line.strip() for line in (root / ".ci" / "run").read_text().splitlines()
               if "pytest" in line and not line.lstrip().startswith("#")]
    assert readme_runs == ci_runs
    assert any('-m "not slow"' in c for c in ci_runs) and any(c.endswith("-m slow") for c in ci_runs)
    # one worker runs a module's tests (module fixtures, compiled shapes: tests/conftest.py)
    assert all("--dist loadfile" in c for c in ci_runs)
