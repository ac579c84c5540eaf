"""`curate retrain` through the Prefect flow: train, evaluate on a .bin, export; then the exported
model curates a crawl as the next round's recognizer."""

import json
import os

import pytest
from click.testing import CliRunner

from curate.cli import main
from curate.testing import synth, tiny_models

pytestmark = pytest.mark.slow


def test_retrain_evaluates_exports_and_closes_the_loop(tmp_path, tiny_onnx):
    (tmp_path / "shards").mkdir()
    synth.write_identity_shard(str(tmp_path / "shards" / "part.parquet"), n_ids=6, per_id=20)
    images, same = synth.pairs(6, 40)
    from models.eval import save_bin

    save_bin(str(tmp_path / "val.bin"), images, same)
    out = tmp_path / "model"
    r = CliRunner().invoke(main, [
        "retrain", str(tmp_path / "shards"), "--out", str(out), "--backbone", "mbf", "--head", "adaface",
        "--head-arg", "m=0.4", "--embedding-size", "64", "--epochs", "1", "--batch-size", "16", "--workers", "0",
        "--eval-bin", str(tmp_path / "val.bin"),
    ])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert s["steps"] == 7 and s["classes"] == 6 and 0.0 <= s["evaluation"]["val.bin"]["accuracy"] <= 1.0
    assert s["warnings"] == [] and len(open(s["metrics"]).read().splitlines()) == 2  # header + one epoch
    card = json.load(open(out / "model.card.json"))
    assert card["head"] == "adaface" and card["output"]["dim"] == 64 and card["model_sha256"] == s["sha256"]
    assert card["training"]["head"] == "adaface"  # the card describes the weights beside it

    crawl = tmp_path / "crawl" / "someone"
    crawl.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(tiny_models.bright_square_image()).save(crawl / "a.png")
    r = CliRunner().invoke(main, [
        "run", str(tmp_path / "crawl"), "--out", str(tmp_path / "round2"), "--detector", f"insightface:{tiny_onnx['det']}",
        "--recognizer", f"onnx:{out / 'model.onnx'}", "--min-face-size", "10", "--no-progress", "--json",
    ])
    assert r.exit_code == 0, r.output
    s2 = json.loads(r.output[r.output.index("{"):])
    assert s2["kept"] == 1
    import duckdb

    con = duckdb.connect(os.path.join(tmp_path / "round2", "curate.duckdb"), read_only=True)
    model_id, width = con.execute("SELECT model_id, octet_length(embedding) FROM images").fetchone()
    con.close()
    assert model_id == "model@" + s["sha256"][:12] and width == 2 * 64  # sha256 of model.onnx and its .data
    # the same directory with another head: refused, naming the difference, nothing trained or written
    r = CliRunner().invoke(main, [
        "retrain", str(tmp_path / "shards"), "--out", str(out), "--backbone", "mbf", "--head", "arcface",
        "--embedding-size", "64", "--epochs", "1", "--batch-size", "16", "--workers", "0",
    ])
    assert r.exit_code == 9 and "head: 'arcface' here, 'adaface' in the run" in r.output, r.output
    assert json.load(open(out / "model.card.json"))["head"] == "adaface"
