"""The house's rules of layout: the package's top holds only its concept subpackages and what
every layer shares; imports run down the layers below, never up and never in a circle; the NumPy
reference imports no torch."""

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fashion_lightning"
# Top to bottom: a module imports its own subpackage and the layers below it, nothing above.
LAYERS = [
    {"__main__"},
    {"experiments", "deploy", "reference"},  # the commands beside Lightning's, and the reference
    {"cli"},  # Lightning's fit/validate/test/predict (experiments build their fits through it)
    {"training"},
    {"evaluation"},
    {"data"},
    {"models", "optim"},
    {"errors", "atomic", "internals", "moved", ""},  # what every layer shares; "" the package
]
SHARED_LAYER = len(LAYERS) - 1  # its modules may import one another
SHARED = {"__init__.py", "__main__.py", "errors.py", "atomic.py", "internals.py", "moved.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package's modules that `path` imports, at any depth of its code (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in MODULES}


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def room(module: str) -> str:
    """The subpackage (or top-level module) a module lives in: `training` for its module."""
    return module.removeprefix("fashion_lightning").removeprefix(".").split(".")[0]


def layer(module: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room(module) in rooms)


def test_the_top_holds_the_concept_rooms_and_what_every_layer_shares() -> None:
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert files == SHARED
    assert folders == set().union(*LAYERS[1:-1])


def test_imports_form_no_circle() -> None:
    try:
        tuple(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        raise AssertionError(f"an import circle: {' -> '.join(e.args[1])}") from None


def test_no_room_imports_one_above_it_or_a_neighbour() -> None:
    upward = [
        f"{module} -> {dep}"
        for module, deps in GRAPH.items()
        for dep in deps
        if layer(dep) < layer(module)
        or (layer(dep) == layer(module) != 7 and room(dep) != room(module))
    ]
    assert not upward, upward


def test_the_reference_imports_no_torch() -> None:
    code = (
        "import sys, fashion_lightning.reference.__main__, fashion_lightning.reference.training\n"
        "print(sorted(m for m in ('torch', 'lightning', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
