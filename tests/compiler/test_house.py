"""The house rules the tree keeps (issue 17), read from the sources' ASTs: no circle in the import
graph of ptqc's modules (module-level and function-local imports alike), no function over 80
lines in compiler/, passes/, targets/ and runtime/, runtime/ importing nothing else of ptqc, and
function-local imports only for optional or heavy dependencies, each saying so."""
import ast
import pathlib
import re

import networkx as nx

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _modules() -> dict[str, tuple[pathlib.Path, ast.Module]]:
    """ptqc's module name -> (file, AST), by pyproject's package-dir map."""
    table = re.search(r"package-dir\s*=\s*\{([^}]*)\}", (ROOT / "pyproject.toml").read_text())
    dirs = sorted(((d.rstrip("/"), p) for p, d in re.findall(r'"([\w.]+)"\s*=\s*"([^"]+)"', table.group(1))
                   if p.startswith("ptqc")), key=lambda x: -len(x[0]))
    found = {}
    for top in ("compiler", "passes", "targets", "runtime"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            folder, package = next((d, p) for d, p in dirs if rel.startswith(d + "/"))
            rest = rel[len(folder) + 1:-3].replace("/", ".")
            rest = "" if rest == "__init__" else rest.removesuffix(".__init__")
            found[package + ("." + rest if rest else "")] = (path, ast.parse(path.read_text(), str(path)))
    return found


def _imports(name: str, path: pathlib.Path, tree: ast.Module, known: set[str]) -> set[str]:
    """The ptqc modules ``name`` imports (a ``from package import module`` names the module)."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            targets = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
                for _ in range(n.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{base}" if base else package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in n.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_no_import_circles_in_ptqc():
    modules = _modules()
    graph = nx.DiGraph()
    for name, (path, tree) in modules.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in _imports(name, path, tree, set(modules)))
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles: {cycles[:3]}"


def test_no_function_over_80_lines():
    long = [f"{path.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for path, tree in _modules().values() for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long


def test_runtime_imports_nothing_else_of_ptqc():
    modules = _modules()
    outside = {f"{name} -> {target}" for name, (path, tree) in modules.items() if name.startswith("ptqc.runtime")
               for target in _imports(name, path, tree, set(modules)) if not target.startswith("ptqc.runtime")}
    assert not outside, sorted(outside)


def test_tools_import_nothing_from_tests():
    """tools/ (the demo, the benchmarks) stand on the package: their sample models come from
    ptqc.samples, never from tests/."""
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}
    found = []
    for path in sorted((ROOT / "tools").glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [n.module or ""] if isinstance(n, ast.ImportFrom) and not n.level else []
            found += [f"{path.name}:{n.lineno} {x}" for x in names if x.split(".")[0] in test_modules]
    assert not found, found


def test_function_local_imports_are_optional_dependencies_and_say_so():
    """A function-local import is kept only for an optional or heavy dependency (a frontend,
    dask, scikit-learn, onnxruntime.quantization), with a comment on its line saying why;
    everything else is imported at the top of the module."""
    optional = ("torch", "paddle", "paddle2onnx", "tensorflow", "tf2onnx", "caffe2onnx", "dask", "sklearn",
                "threadpoolctl", "onnxruntime.quantization", "PIL")
    bad = []
    for _, (path, tree) in _modules().items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(fn):
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    module = n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
                    said = "#" in lines[n.lineno - 1] or "#" in lines[n.end_lineno - 1]
                    if not (module.split(".")[0] in optional or module.startswith(optional)) or not said:
                        bad.append(f"{path.relative_to(ROOT)}:{n.lineno} {module}")
    assert not bad, f"function-local imports: {bad}"
