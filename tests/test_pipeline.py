"""One shard end to end, in-process (no Ray): accounting, outputs, resume and output errors."""

import io
import os
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.config import DetectConfig, EmbedConfig, Resources, RunConfig
from curate.errors import OutputError
from curate.io import shards as shards_mod
from curate.io.shards import ShardStore
from curate.io.sources import open_source
from curate.pipeline import load_models, process_shard
from curate.schema import decode_embeddings, images_schema
from curate.testing import tiny_models

CFG = RunConfig(shard_size=16)
RES = Resources(batch_size=8)


def run_all(out, crawl, models, cfg=CFG):
    store = ShardStore(str(out))
    store.open_run(open_source(str(crawl)), cfg)
    for s in store.pending():
        process_shard(store, store.source(), s, models, cfg, RES)
    return store


def read(store, kind="images"):
    t = pq.ParquetDataset(store.completed_files(kind)).read()
    return t.sort_by("item") if kind == "images" else t


@pytest.fixture(scope="module")
def curated(scored_run):
    return ShardStore(scored_run)  # the same spine run, shared with the audit tests


def test_every_input_is_accounted_for_once(curated, sample_crawl):
    images = read(curated)
    files = sorted(os.path.relpath(os.path.join(d, f), sample_crawl) for d, _, fs in os.walk(sample_crawl) for f in fs)
    assert sorted(images["source"].to_pylist()) == files
    assert images["item"].to_pylist() == list(range(len(files)))
    assert images.schema == images_schema(512)
    assert curated.pending() == [] and len(curated.markers()) == curated.manifest["shards"]


def test_known_bad_inputs_get_their_reasons(curated):
    rows = {r["source"]: r for r in read(curated).select(["source", "reason", "keep"]).to_pylist()}
    expect = {
        "eileen_collins/zz_truncated.jpg": "decode_error", "eileen_collins/zz_page.jpg": "decode_error",
        "eileen_collins/zz_empty.jpg": "decode_error", "eileen_collins/zz_cat.jpg": "no_face",
        "lfw_small/000.png": "ok", "tom_hanks/zz_group.jpg": "multi_face_ambiguous",  # a 25 px face: found
        "eileen_collins/000_original.jpg": "ok", "tom_hanks/000_original.jpg": "ok",
    }
    assert {k: rows[k]["reason"] for k in expect} == expect
    assert all(r["keep"] == (r["reason"] == "ok") for r in rows.values())


def test_kept_rows_carry_crop_embedding_and_norm(curated):
    t = read(curated)
    kept = t.filter(t["keep"])
    assert len(kept) >= 15
    emb = decode_embeddings(kept["embedding"]).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)  # float16 storage
    assert (np.asarray(kept["feat_norm"]) > 0).all() and kept["model_id"][0].as_py().startswith("edgeface_s@")
    crop = Image.open(io.BytesIO(kept["crop"][0].as_py()))
    assert crop.size == (112, 112) and crop.format == "JPEG"
    # same person, different photos: closer than different people
    ids = kept["identity"].to_pylist()
    a = [i for i, x in enumerate(ids) if x == "t1_person_0"]
    b = [i for i, x in enumerate(ids) if x == "t1_person_5"]
    assert emb[a[0]] @ emb[a[1]] > emb[a[0]] @ emb[b[0]]
    no_face = t.filter(pc.equal(t["reason"], "no_face"))
    assert no_face["embedding"].null_count == len(no_face)


def test_detections_hold_every_face_and_one_selected_per_image(curated):
    images, det = read(curated), read(curated, "detections")
    assert len(det) == pc.sum(images["n_faces"]).as_py()
    selected = det.filter(det["selected"])
    with_face = images.filter(images["face_idx"].is_valid())
    assert sorted(selected["image_id"].to_pylist()) == sorted(with_face["image_id"].to_pylist())
    group = images.filter(pc.equal(images["source"], "tom_hanks/zz_group.jpg"))
    assert group["n_faces"][0].as_py() >= 5


def test_resume_after_a_crash_redoes_only_the_broken_shard(tmp_path, sample_crawl, default_models, monkeypatch):
    crawl = tmp_path / "crawl"
    shutil.copytree(sample_crawl, crawl)
    store = ShardStore(str(tmp_path / "out"))
    store.open_run(open_source(str(crawl)), CFG)
    real = shards_mod.write_json

    def crash_on_marker_of_shard_1(path, obj):
        if "part-000001" in path:
            raise KeyboardInterrupt("killed between data files and marker")
        return real(path, obj)

    monkeypatch.setattr(shards_mod, "write_json", crash_on_marker_of_shard_1)
    with pytest.raises(KeyboardInterrupt):
        for s in store.pending():
            process_shard(store, store.source(), s, default_models, CFG, RES)
    monkeypatch.setattr(shards_mod, "write_json", real)
    assert store.pending()[0] == 1 and os.path.exists(store.shard_path("images", 1))
    assert store.shard_path("images", 1) not in store.completed_files("images")  # readers never see it
    # the crawl changes on disk after planning: the resumed run still follows the plan
    (crawl / "eileen_collins" / "new_after_plan.jpg").write_bytes(b"x")
    resumed = run_all(tmp_path / "out", crawl, default_models)
    fresh = run_all(tmp_path / "fresh", sample_crawl, default_models)
    a, b = read(resumed), read(fresh)
    assert a.drop_columns(["detector_id"]).equals(b.drop_columns(["detector_id"]))
    assert len(set(a["image_id"].to_pylist())) == len(a)


def test_output_directory_errors(tmp_path, sample_crawl):
    src = open_source(str(sample_crawl))
    ShardStore(str(tmp_path / "out")).open_run(src, CFG)
    with pytest.raises(OutputError, match="holds another run .shard_size: 17 here, 16 in the run.; use another --out"):
        ShardStore(str(tmp_path / "out")).open_run(src, RunConfig(shard_size=17))
    with pytest.raises(OutputError, match="detect.detector: 'scrfd' here, 'yunet' in the run"):
        ShardStore(str(tmp_path / "out")).check(src, RunConfig(shard_size=16, detect=DetectConfig(detector="scrfd")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create output directory"):
        ShardStore(str(tmp_path / "file" / "out")).open_run(src, CFG)


def test_disk_full_is_a_clear_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(table, path, **kw):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards_mod.pq, "write_table", full)
    with pytest.raises(OutputError, match="disk full"):
        shards_mod.atomic_write(str(tmp_path / "x.parquet"), lambda tmp: shards_mod.pq.write_table(None, tmp))
    assert os.listdir(tmp_path) == []


def test_insightface_path_end_to_end_with_tiny_models(tmp_path, tiny_onnx):
    crawl = tmp_path / "crawl"
    for k in range(6):
        d = crawl / f"id{k % 2}"
        d.mkdir(parents=True, exist_ok=True)
        img = tiny_models.bright_square_image(128, at=(32 + 16 * (k % 3), 48))
        Image.fromarray(img).save(d / f"{k}.png")
    Image.new("RGB", (128, 128), (10, 10, 10)).save(crawl / "id0" / "blank.png")
    cfg = RunConfig(shard_size=4, detect=DetectConfig(detector=f"insightface:{tiny_onnx['det']}", min_face_size=10),
                    embed=EmbedConfig(recognizer=f"onnx:{tiny_onnx['rec']}"))
    store = run_all(tmp_path / "out", crawl, load_models(cfg), cfg)
    t = read(store)
    assert t.schema == images_schema(32)
    assert t["reason"].to_pylist().count("ok") == 6 and t["reason"].to_pylist().count("no_face") == 1
    assert t["detector_id"][0].as_py().startswith("insightface:det.onnx@")
