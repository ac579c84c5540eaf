"""Opening a run directory, a model or an evaluation file never runs code: no module unpickles
what it reads from disk (pickle.load(s), np.load(allow_pickle=True), torch.load without
weights_only=True); an Unpickler subclass must refuse globals (find_class). Ray's own transport
is not file data and is not looked at."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "models", "flows", "bench")


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, name: str):
    kw = next((k for k in call.keywords if k.arg == name), None)
    return None if kw is None else getattr(kw.value, "value", kw.value)


def offences(source: str, where: str) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = _name(node.func)
            if f in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads",
                     "joblib.load", "pd.read_pickle", "pandas.read_pickle"):
                bad.append(f"{where}:{node.lineno}: {f}")
            if f in ("np.load", "numpy.load") and _kw(node, "allow_pickle") is True:
                bad.append(f"{where}:{node.lineno}: {f}(allow_pickle=True)")
            if f == "torch.load" and _kw(node, "weights_only") is not True:
                bad.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
        if isinstance(node, ast.ClassDef) and any(_name(b).endswith("Unpickler") for b in node.bases):
            if not any(isinstance(b, ast.FunctionDef) and b.name == "find_class" for b in node.body):
                bad.append(f"{where}:{node.lineno}: Unpickler subclass {node.name} without find_class")
    return bad


def test_the_checker_catches_each_form():
    src = ("import pickle, numpy as np, torch\npickle.load(f)\nnp.load(p, allow_pickle=True)\ntorch.load(p)\n"
           "class U(pickle.Unpickler):\n    pass\n")
    assert len(offences(src, "x")) == 4
    assert offences("import numpy as np, torch\nnp.load(p)\ntorch.load(p, weights_only=True)\n", "x") == []


def test_no_module_unpickles_data_from_disk():
    bad = []
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            bad += offences(f.read_text(), str(f.relative_to(ROOT)))
    assert bad == []
