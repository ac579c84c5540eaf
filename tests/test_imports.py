"""Only flows/ may import ray or prefect (STYLE rule 2)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"ray", "prefect", "prefect_ray"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_sources_never_import_ray_or_prefect():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
        for pkg in ("curate", "models")
        for p in (ROOT / pkg).rglob("*.py")
        if _imports(p) & FORBIDDEN
    }
    assert offenders == {}


def test_importing_every_library_module_loads_neither():
    mods = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("curate", "models")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__main__.py"  # an entry point: it runs the command line
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = sorted(k for k in sys.modules if k.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_scoring_and_reading_evaluation_sets_need_no_torch(tmp_path):
    """torch is imported only where training or torch checkpoints need it: scoring a crawl and
    reading an insightface .bin (curate leakage --against x.bin) work with torch unavailable."""
    code = (
        "import sys\nsys.modules['torch'] = None  # any import of torch now fails\n"
        "import numpy as np\n"
        "from curate.config import ScoreConfig\nfrom curate.scoring import score_table\n"
        "from curate.testing.synth import EmbeddingCrawl, jpeg, identity_face\n"
        "import curate.leakage, curate.cli\n"
        "from models.eval import load_bin, save_bin\n"
        "scores, ids, _ = score_table(EmbeddingCrawl(200, 10, dim=16, shard_size=200).shard(0), ScoreConfig())\n"
        "assert len(scores) == 200 and len(ids) == 10\n"
        f"save_bin({str(tmp_path / 'x.bin')!r}, [jpeg(identity_face(0, np.random.default_rng(0)))] * 2, [True])\n"
        f"images, same = load_bin({str(tmp_path / 'x.bin')!r})\n"
        "assert len(images) == 2 and list(same) == [True]\nprint('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
