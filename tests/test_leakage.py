"""Benchmark leakage: evaluation people and photos planted in a training crawl are found, by the
run's own models and the card's thresholds, from identity folders and from a .bin written by the
project's own writer; nothing else is; `curate export --exclude-leaked` leaves them out."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, curate_in_process

from curate.cli import main

FACES = SHARED_DATA / "faces"
BENCH = ["lfw__Colin_Powell", "lfw__Tony_Blair", "lfw__Ariel_Sharon"]
TRAIN = ["lfw__Hugo_Chavez", "lfw__Jacques_Chirac", "lfw__Vladimir_Putin", "lfw__Gerhard_Schroeder",
         "facerec__obama", "facerec__biden"]


def scored(crawl, out, models):
    return curate_in_process(crawl, out, models, shard_size=32)["out"]


def write_bin(run, identities, path, kept_only=False):
    """The run's aligned crops of ``identities`` as an insightface .bin (consecutive pairs)."""
    from curate import audit
    from models.eval import save_bin

    con = audit.connect(run)
    crops = [r[0] for r in con.execute(f"SELECT crop FROM curated WHERE crop IS NOT NULL AND list_contains($i, identity) "
                                       f"{'AND keep' if kept_only else ''} ORDER BY image_id", {"i": identities}).fetchall()]
    crops = crops[: len(crops) // 2 * 2]
    save_bin(str(path), crops, [True] * (len(crops) // 2))


@pytest.mark.skipif(not FACES.is_dir(), reason="no ../shared/data/faces")
def test_planted_people_and_photos_are_found_on_real_faces(tmp_path, default_models):
    bench, crawl = tmp_path / "bench", tmp_path / "crawl"
    for name in BENCH:
        shutil.copytree(FACES / name, bench / name)
    for name in TRAIN:
        shutil.copytree(FACES / name, crawl / name)
    # planted: three photos of a benchmark person under a new label, and one benchmark photo
    # filed under a training person
    powell = sorted((FACES / "lfw__Colin_Powell").iterdir())
    (crawl / "someone_new").mkdir()
    for p in powell[:3]:
        shutil.copy(p, crawl / "someone_new" / p.name)
    blair = sorted((FACES / "lfw__Tony_Blair").iterdir())[0]
    shutil.copy(blair, crawl / "lfw__Hugo_Chavez" / "zz_copy.jpg")
    run = scored(crawl, tmp_path / "run", default_models)

    r = CliRunner().invoke(main, ["leakage", run, "--against", str(bench), "--json"])
    assert r.exit_code == 0, r.output
    found = {(x["identity"], x["eval_identity"]): x for x in json.loads(r.output[r.output.index("["):])}
    # the Blair photo under Chavez is rejected by the scoring (far from Chavez): it is not trained on,
    # so Chavez's ten real photos are not left out for it
    chavez = CliRunner().invoke(main, ["sql", run, "SELECT reason FROM curated WHERE source LIKE '%zz_copy.jpg'"])
    assert "far_from_dominant" in chavez.output or "cross_id_conflict" in chavez.output, chavez.output
    assert set(found) == {("someone_new", "lfw__Colin_Powell")}, found
    assert found[("someone_new", "lfw__Colin_Powell")]["faces_matched"] == 3
    faces = pq.read_table(f"{run}/leakage/faces.parquet")
    assert set(faces["identity"].to_pylist()) == {"someone_new"}

    # a flat folder of photos (no identity folders): unlabelled faces, matched photo by photo; the
    # earlier check's results stay beside this one's
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in powell[:2]:
        shutil.copy(p, flat / p.name)
    r = CliRunner().invoke(main, ["leakage", run, "--against", str(flat)])
    assert r.exit_code == 0, r.output
    assert "2 faces; 3 kept crawl faces match (6 pairs)" in r.output, r.output  # 2 copies, and Powell's third photo
    idents = pq.read_table(f"{run}/leakage/identities.parquet").to_pylist()
    assert {(x["identity"], x["eval_identity"], x["why"]) for x in idents} == {
        ("someone_new", "lfw__Colin_Powell", "same_image"), ("someone_new", None, "same_image")}
    assert len({x["against"] for x in idents}) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    r = CliRunner().invoke(main, ["leakage", run, "--against", str(empty)])
    assert r.exit_code != 0 and ("no images" in r.output or "no face" in r.output), r.output

    # the same check against a .bin of the benchmark's aligned crops, written by our own writer
    bench_run = scored(bench, tmp_path / "bench-run", default_models)
    write_bin(bench_run, BENCH, tmp_path / "bench.bin")
    r = CliRunner().invoke(main, ["leakage", run, "--against", str(tmp_path / "bench.bin"), "--json"])
    assert r.exit_code == 0, r.output
    leaked = {x["identity"] for x in json.loads(r.output[r.output.index("["):])}
    assert leaked == {"someone_new"}

    # a reviewer keeps the Blair photo under Chavez: now a kept face matches a benchmark person, but
    # Chavez's template and his other faces do not: that face is left out, not Chavez
    copy_id = CliRunner().invoke(main, ["sql", run, "SELECT image_id FROM curated WHERE source LIKE '%zz_copy.jpg'",
                                        "--format", "csv"]).output.split()[-1]
    (tmp_path / "keep.json").write_text(json.dumps([{"scope": "image", "key": copy_id, "action": "keep", "reviewer": "t"}]))
    assert CliRunner().invoke(main, ["review", "import", run, str(tmp_path / "keep.json")]).exit_code == 0
    assert CliRunner().invoke(main, ["score", run]).exit_code == 0
    r = CliRunner().invoke(main, ["leakage", run, "--against", str(bench), "--json"])
    assert r.exit_code == 0, r.output
    found = {(x["identity"], x["eval_identity"]): x for x in json.loads(r.output[r.output.index("["):])}
    assert found[("lfw__Hugo_Chavez", "lfw__Tony_Blair")]["scope"] == "faces"
    assert found[("someone_new", "lfw__Colin_Powell")]["scope"] == "identity"

    r = CliRunner().invoke(main, ["export", run, str(tmp_path / "clean"), "--format", "folders", "--exclude-leaked"])
    assert r.exit_code == 0 and "and 1 faces" in r.output, r.output
    manifest = pq.read_table(tmp_path / "clean" / "manifest.parquet")
    exported = set(manifest["identity"].to_pylist())
    assert not exported & leaked and "lfw__Hugo_Chavez" in exported and copy_id not in manifest["image_id"].to_pylist()


def test_a_bin_of_one_identity_is_found_in_the_sample_crawl(scored_run, tmp_path):
    """Without ../shared: the .bin holds one identity's kept crops (its folder also holds another
    person's photo, a planted swap, which would rightly be found too)."""
    from curate import audit

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    con = audit.connect(str(run))
    ident, n = con.execute("SELECT identity, count(*) FROM curated WHERE keep GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1").fetchone()
    con.close()
    write_bin(str(run), [ident], tmp_path / "one.bin", kept_only=True)
    r = CliRunner().invoke(main, ["leakage", str(run), "--against", str(tmp_path / "one.bin"), "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[r.output.index("["):])
    assert {x["identity"] for x in rows} == {ident} and rows[0]["why"] == "same_image"
    r = CliRunner().invoke(main, ["leakage", str(run), "--against", str(tmp_path / "nothing.bin")])
    assert r.exit_code == 2  # a missing file: click's own error
