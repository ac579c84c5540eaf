"""What a new user met (issue: correctness a user can trust): inputs that vanished, state that
silently reverted, slow noisy errors, NaN embeddings that passed as faces, and thresholds set by
the noise on small real crawls."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, curate_in_process
from PIL import Image

from curate.cli import main
from curate.config import DetectConfig, EmbedConfig, Resources, RunConfig
from curate.errors import InputError
from curate.io.shards import ShardStore
from curate.io.sources import FolderSource, open_source
from curate.pipeline import load_models, process_shard
from curate.testing import tiny_models

ROOT = Path(__file__).resolve().parents[1]
FACES = SHARED_DATA / "faces"


def jpeg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path, "JPEG")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- every input accounted for -----------------------------------------------------------------


def test_linked_identity_folders_are_followed_wherever_they_point(tmp_path):
    crawl = tmp_path / "crawl"
    for k in range(3):
        jpeg(crawl / "real_person" / f"{k}.jpg", k)
    os.symlink(crawl / "real_person", crawl / "alias")  # a folder link inside the root
    outside = tmp_path / "elsewhere"
    jpeg(outside / "x.jpg")
    os.symlink(outside, crawl / "outside")  # a crawl assembled from links to folders stored elsewhere
    os.symlink(crawl, crawl / "real_person" / "loop")  # back to a folder above: one row, not a cycle
    src = FolderSource(str(crawl))
    index = src.plan()
    rows = {r["source"]: r for r in src.fetch(index, 1 << 20).to_pylist()}
    assert sorted(rows) == ["alias/0.jpg", "alias/1.jpg", "alias/2.jpg", "alias/loop", "outside/x.jpg",
                            "real_person/0.jpg", "real_person/1.jpg", "real_person/2.jpg", "real_person/loop"]
    assert rows["alias/1.jpg"]["identity"] == "alias" and rows["alias/1.jpg"]["reason"] is None
    assert rows["outside/x.jpg"]["identity"] == "outside" and rows["outside/x.jpg"]["reason"] is None
    assert rows["outside/x.jpg"]["resolved_path"] == os.path.realpath(outside / "x.jpg")  # where it really is
    assert rows["real_person/0.jpg"]["resolved_path"] is None  # no link on the way
    assert rows["real_person/loop"]["reason"] == "read_error" and "loops back" in rows["real_person/loop"]["reason_detail"]
    # --no-follow-links: links must stay inside the root, as before
    strict = FolderSource(str(crawl), follow_links=False)
    rows = {r["source"]: r for r in strict.fetch(strict.plan(), 1 << 20).to_pylist()}
    assert "outside/x.jpg" not in rows and rows["alias/1.jpg"]["reason"] is None
    assert rows["outside"]["reason"] == "read_error" and "outside the input root" in rows["outside"]["reason_detail"]


def test_a_crawl_of_linked_folders_runs_from_the_command_line(tmp_path):
    store = tmp_path / "store"
    for k in range(3):
        jpeg(store / "person_a" / f"{k}.jpg", k)
    (tmp_path / "crawl").mkdir()
    os.symlink(store / "person_a", tmp_path / "crawl" / "person_a")
    r = cli("run", tmp_path / "crawl", "--out", tmp_path / "out", "--dry-run", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "3 images of 1 identities" in r.output


def test_an_empty_crawl_is_an_error_that_says_what_was_searched(tmp_path):
    (tmp_path / "crawl" / ".hidden").mkdir(parents=True)
    with pytest.raises(InputError, match="nothing to curate: no files under .*hidden files"):
        ShardStore(str(tmp_path / "out")).open_run(open_source(str(tmp_path / "crawl")), RunConfig())
    assert not (tmp_path / "out").exists()  # nothing half-made
    r = cli("run", tmp_path / "crawl", "--out", tmp_path / "out", "--no-progress")
    assert r.exit_code == 3 and "nothing to curate" in r.output


# -- fail fast ---------------------------------------------------------------------------------


def _run_cli(*args, env=None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, reporting whether Ray or Prefect were imported."""
    code = ("import sys\nfrom curate.cli import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=True)\n"
            "finally:\n    print('LOADED', 'ray' in sys.modules, 'prefect' in sys.modules, file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_errors_are_one_line_before_ray_or_prefect_start(tmp_path):
    crawl = tmp_path / "crawl"
    jpeg(crawl / "a" / "1.jpg")
    ShardStore(str(tmp_path / "out")).open_run(open_source(str(crawl)), RunConfig(shard_size=100))
    p = _run_cli("run", crawl, "--out", tmp_path / "out", "--detector", "scrfd", "--no-progress")
    lines = [x for x in p.stderr.splitlines() if not x.startswith("LOADED")]
    assert p.returncode == 9 and len(lines) == 1, p.stderr
    assert "detect.detector: 'scrfd' here, 'yunet' in the run" in lines[0] and "shard_size: 2000 here, 100" in lines[0]
    assert "LOADED False False" in p.stderr  # the check ran before Ray and Prefect were imported
    p = _run_cli("run", crawl, "--out", tmp_path / "new", "--recognizer", "onnx:/no/such/model.onnx")
    assert p.returncode == 4 and "no such file" in p.stderr and "LOADED False False" in p.stderr
    p = _run_cli("run", crawl, "--out", tmp_path / "new", "--detector", "yolo")
    assert p.returncode == 2 and "unknown detector 'yolo'" in p.stderr and "Traceback" not in p.stderr


def test_every_option_gets_its_error_path(scored_run, tmp_path):
    r = cli("report", scored_run, "-o", tmp_path / "missing" / "dir" / "r.html")
    assert r.exit_code == 7 and "does not exist" in r.output and r.exception.__class__ is SystemExit
    assert cli("report", scored_run, "--identities", "-1").exit_code == 2
    r = cli("audit", scored_run, "-q", "reasons", "-p", "nosuch=1")
    assert r.exit_code == 2 and "nosuch" in r.output
    r = cli("export", scored_run, tmp_path / "exp", "--min-quality", "100")
    assert r.exit_code == 3 and "nothing to export" in r.output and not (tmp_path / "exp").exists()
    meta = tmp_path / "meta.csv"
    meta.write_text("identity,country\nnobody_here,FR\n")
    r = cli("attributes", scored_run, "--metadata", meta)
    assert r.exit_code == 3 and "matches none of the run's" in r.output
    assert cli("report", scored_run, "--scores", "ffffffff").exit_code == 7


# -- a model that returns NaN is never a face ----------------------------------------------------


def test_nan_embeddings_are_embed_errors(tmp_path, tiny_onnx):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "nan.onnx"
    tiny_models.arcface(str(path))
    m = onnx.load(str(path))
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[:, 0] = np.nan  # corrupted weights
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, m.graph.initializer[0].name))
    onnx.save(m, str(path))
    crawl = tmp_path / "crawl" / "someone"
    crawl.mkdir(parents=True)
    Image.fromarray(tiny_models.bright_square_image()).save(crawl / "a.png")
    cfg = RunConfig(shard_size=4, detect=DetectConfig(detector=f"insightface:{tiny_onnx['det']}", min_face_size=10),
                    embed=EmbedConfig(recognizer=f"onnx:{path}"))
    store = ShardStore(str(tmp_path / "out"))
    store.open_run(open_source(str(tmp_path / "crawl")), cfg)
    process_shard(store, store.source(), 0, load_models(cfg), cfg, Resources(batch_size=4))
    row = pq.read_table(store.completed_files("images")[0]).to_pylist()[0]
    assert row["reason"] == "embed_error" and not row["keep"] and row["embedding"] is None
    assert "NaN" in row["reason_detail"]


# -- small real crawls: thresholds from the model, not from the noise ---------------------------


def _real_crawl(dest: Path, people: list[str], per: int, swap: tuple[str, str] | None) -> dict[str, str]:
    """Identity folders of real LFW-style photos; ``swap`` = (into, from): one photo of ``from``
    filed under ``into``. Returns source -> truth ('clean' or 'swap')."""
    truth = {}
    for p in people:
        files = sorted((FACES / p).iterdir())[:per]
        for f in files:
            (dest / p).mkdir(parents=True, exist_ok=True)
            (dest / p / f.name).write_bytes(f.read_bytes())
            truth[f"{p}/{f.name}"] = "clean"
    if swap:
        into, frm = swap
        f = sorted((FACES / frm).iterdir())[-1]
        (dest / into / f"zz_{f.name}").write_bytes(f.read_bytes())
        truth[f"{into}/zz_{f.name}"] = "swap"
    return truth


def _curate_in_process(crawl: Path, out: Path, models) -> dict:
    summary = curate_in_process(crawl, out, models, shard_size=64, batch_size=16)
    store = ShardStore(summary["out"])
    t = pq.read_table(os.path.join(store.out, "scores", f"scores-{summary['score_digest']}.parquet"))
    src = {r["image_id"]: r["source"] for f in store.completed_files("images")
           for r in pq.read_table(f, columns=["image_id", "source"]).to_pylist()}
    return {src[r["image_id"]]: r["reason"] for r in t.select(["image_id", "reason"]).to_pylist()}, summary


LFW = ["lfw__George_W_Bush", "lfw__Colin_Powell", "lfw__Tony_Blair", "lfw__Donald_Rumsfeld", "lfw__Ariel_Sharon"]


@pytest.mark.shared_data
@pytest.mark.skipif(not FACES.is_dir(), reason="no ../shared/data/faces")
@pytest.mark.parametrize("people,swap", [
    (LFW, ("lfw__George_W_Bush", "lfw__Colin_Powell")),  # the crawl: 5 people, one Powell under Bush
    (LFW[:2], ("lfw__George_W_Bush", "lfw__Tony_Blair")),  # someone from outside the crawl
    (LFW[:1], None),  # one identity: nothing to measure against but the card
], ids=["5-people", "2-people", "1-person"])
def test_small_real_crawls_reject_no_clean_face_and_flag_the_swap(tmp_path, default_models, people, swap):
    truth = _real_crawl(tmp_path / "crawl", people, 8, swap)
    reasons, summary = _curate_in_process(tmp_path / "crawl", tmp_path / "out", default_models)
    clean_rejected = {s: r for s, r in reasons.items() if truth.get(s) == "clean" and r != "ok"}
    assert clean_rejected == {}, (clean_rejected, summary["far_angle"])
    swapped = [r for s, r in reasons.items() if truth.get(s) == "swap"]
    assert all(r in ("far_from_dominant", "cross_id_conflict") for r in swapped), swapped
    assert summary["threshold_source"]["far_angle"] == "card" and summary["calibrated"]
