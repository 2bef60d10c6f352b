"""modeling/ml is plain Python: no Django, and torch only inside functions."""

import ast
from pathlib import Path

ML = Path(__file__).resolve().parents[2] / "modeling" / "ml"
HEAVY = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "llama_cpp", "vllm"}


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node, node.module.split(".")[0]


def test_modeling_ml_has_no_django_imports():
    files = list(ML.rglob("*.py"))
    assert files
    offenders = [
        f"{path.name}:{node.lineno}"
        for path in files
        for node, top in _imports(ast.parse(path.read_text()))
        if top in {"django", "rest_framework", "annotation", "modeling", "config"}
        and not (top == "modeling" and getattr(node, "module", "").startswith("modeling.ml"))
    ]
    assert offenders == []


def test_modeling_ml_imports_heavy_libraries_only_inside_functions():
    offenders = []
    for path in ML.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] in HEAVY for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


ROOT = ML.parents[1]
# Everything of the app outside modeling/ml: the web process imports these, so none may load torch
# and friends (not even inside a function: a service that needs a model calls into modeling/ml).
APP = ("annotation", "modeling", "config")


def test_no_app_module_outside_modeling_ml_imports_heavy_libraries():
    offenders = []
    for package in APP:
        for path in (ROOT / package).rglob("*.py"):
            if ML in path.parents or "migrations" in path.parts:
                continue
            for node, top in _imports(ast.parse(path.read_text())):
                if top in HEAVY:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {top}")
    assert offenders == []


def test_cuda_is_asked_about_in_modeling_ml_devices_only():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in APP
        for path in (ROOT / package).rglob("*.py")
        if path.name != "devices.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "cuda.is_available" in line or "is_bf16_supported" in line
    ]
    assert offenders == []
