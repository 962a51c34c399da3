"""The house rules of the package, checked on its source (issue 7): the import graph has no
cycle, the core never imports a gate, no private name crosses a module boundary, only
config/ parses config tables, and importing the plugin imports no torch."""
import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "accelgate"
GATES = ("accelgate.quality", "accelgate.distribution", "accelgate.speed")
COMPOSITION_ROOT = "accelgate.plugin"  # registers the gates' plugins by name (pytest_plugins)
CONFIG_PARSERS = {"check_keys", "parse_loosening", "tomllib"}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return found


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import, at any depth of the file."""
    package = name if name in MODULES and (SRC / Path(*name.split(".")[1:]) / "__init__.py").exists() else \
        name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [alias.name for alias in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            out += [(m, []) for m in submodules] or [(base, names)]
            if submodules and len(submodules) < len(names):
                out.append((base, [n for n in names if f"{base}.{n}" not in MODULES]))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, tree in MODULES.items():
        graph[name] = {m for m, _ in _imports(name, tree) if m in MODULES and m != name}
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, stack, cycles = _graph(), {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_never_imports_a_gate():
    offenders = [(name, target) for name, targets in _graph().items()
                 if not name.startswith(GATES) and name != COMPOSITION_ROOT
                 for target in targets if target.startswith(GATES)]
    assert not offenders, offenders


def test_no_private_name_is_imported_across_modules():
    offenders = [(name, module, n) for name, tree in MODULES.items() for module, names in _imports(name, tree)
                 for n in names if n.startswith("_") and not n.startswith("__") and module.startswith("accelgate")]
    assert not offenders, offenders


def test_only_the_config_package_parses_config_tables():
    offenders = [(name, module, n) for name, tree in MODULES.items() if not name.startswith("accelgate.config")
                 for module, names in _imports(name, tree) for n in names + [module]
                 if n in CONFIG_PARSERS or (module.startswith("accelgate.config") and n in CONFIG_PARSERS)]
    assert not offenders, offenders


def test_importing_the_plugin_and_its_gates_imports_no_torch():
    code = ("import sys, accelgate.plugin, accelgate.quality.plugin, accelgate.distribution.plugin, "
            "accelgate.speed.plugin; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
