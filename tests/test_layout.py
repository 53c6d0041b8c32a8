"""The house: one folder per stage, imports point down the data flow (or to a leaf), and no cycles.

Read from the source (top-level and function-level imports alike), so a lazy import cannot hide a cycle.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The stages in data-flow order (docs/DESIGN.md); a module may import its own stage or an earlier one.
STAGES = ("io", "preprocess", "records", "modeling", "training", "serving", "inference", "evaluation", "demo")
# Leaves any stage may use: they import nothing of the project but other leaves and tfrecords_tools.
LEAVES = ("mrgan_tf.errors", "mrgan_tf.cli", "mrgan_tf.requirements", "mrgan_tf.evaluation.metrics",
          "mrgan_tf.evaluation.figures")
# Named exceptions, each with its reason.
UPWARD = {("mrgan_tf.training.train", "mrgan_tf.serving.export"): "train --export writes the SavedModels at its end"}
# Thin command-line modules at the top (python -m mrgan_tf.<tool>): they may import their tool.
TOOLS = ("make_records", "train", "export", "synthesize", "pacs", "client", "evaluate", "demo_data", "dose")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("mrgan_tf", "tfrecords_tools"):
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 2 and parts[0] == "mrgan_tf" and parts[1] in STAGES else None


def test_no_import_cycles():
    graph = _imports(_modules())
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_the_data_flow():
    graph = _imports(_modules())
    wrong = []
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            if d in LEAVES or d.startswith("tfrecords_tools") or _stage(d) is None or (m, d) in UPWARD:
                continue
            if _stage(m) is not None and _stage(d) > _stage(m):
                wrong.append(f"{m} ({STAGES[_stage(m)]}) imports {d} ({STAGES[_stage(d)]})")
    assert not wrong, "\n".join(wrong)


def test_leaves_are_leaves_and_the_top_holds_only_tools():
    modules = _modules()
    graph = _imports(modules)
    for leaf in LEAVES:
        assert graph[leaf] <= set(LEAVES) | {m for m in modules if m.startswith("tfrecords_tools")}, leaf
    top = {p.stem for p in (ROOT / "mrgan_tf").glob("*.py")} - {"__init__"}
    leaves = {"errors", "cli", "requirements"}
    assert top == set(TOOLS) | leaves, top ^ (set(TOOLS) | leaves)
    assert {p.name for p in (ROOT / "mrgan_tf").iterdir() if p.is_dir() and not p.name.startswith("__")} == set(STAGES)
    for tool in TOOLS:   # a thin module: its docstring (the tool's --help), one import, the __main__ guard
        body = ast.parse((ROOT / "mrgan_tf" / f"{tool}.py").read_text()).body
        shape = [type(node).__name__ for node in body]
        if tool == "train":   # before that import: the handler for a signal while TensorFlow loads
            assert shape[1:3] == ["ImportFrom", "Expr"] and body[1].module == "mrgan_tf.training.signals", shape
            shape = shape[:1] + shape[3:]
        assert shape == ["Expr", "ImportFrom", "If"], tool
