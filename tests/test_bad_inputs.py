"""The bad-input corpus (curate/testing/bad_inputs.py): every kind is recorded with a clear reason,
the run finishes, and nothing vanishes."""

import os

import pyarrow.parquet as pq
import pytest

from curate.config import Resources, RunConfig, ScoreConfig
from curate.errors import InputError
from curate.io.shards import ShardStore
from curate.io.sources import open_source
from curate.pipeline import process_shard
from curate.scoring import score_run
from curate.testing import bad_inputs  # noqa: E402

CFG = RunConfig(shard_size=12)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, dlib_models):
    root = tmp_path_factory.mktemp("bad")
    expect = bad_inputs.build(str(root))
    cfg = RunConfig(shard_size=12, decode=CFG.decode.__class__(max_bytes=2_000_000))
    results = {}
    for i, (path, exp) in enumerate(expect.items()):
        store = ShardStore(str(root / f"out{i}"))
        store.open_run(open_source(path), cfg)
        for s in store.pending():
            process_shard(store, store.source(), s, dlib_models, cfg, Resources(batch_size=4))
        score_run(store.out, ScoreConfig())
        images = pq.ParquetDataset(store.completed_files("images")).read()
        final = pq.read_table(os.path.join(store.out, "scores", f"scores-{store.current_scoring()}.parquet"))
        results[path] = (exp, images, final, store)
    return results


def test_the_corpus_covers_at_least_30_kinds(corpus):
    assert sum(len(exp) for exp, *_ in corpus.values()) >= 30


def test_every_bad_input_gets_its_reason_and_nothing_vanishes(corpus):
    problems = []
    for path, (exp, images, final, store) in corpus.items():
        assert sorted(images["item"].to_pylist()) == list(range(store.manifest["items"]))  # no gaps, no duplicates
        assert images["image_id"].unique().to_pylist().__len__() == len(images)
        assert set(images["source"].to_pylist()) == set(exp), path
        spine = {r["source"]: r for r in images.to_pylist()}
        assert len(final) == len(images)  # scoring ran over every row too
        for source, (allowed, detail) in exp.items():
            r = spine[source]
            got = r["reason"]  # the spine's verdict on the input itself
            if got not in allowed:
                problems.append(f"{source}: {got} ({r['reason_detail']}) not in {sorted(allowed)}")
            if detail and detail not in (r["reason_detail"] or ""):
                problems.append(f"{source}: detail {r['reason_detail']!r} lacks {detail!r}")
            if r["reason"] in ("read_error", "decode_error", "too_large", "too_small_image", "no_identity"):
                assert r["reason_detail"] and len(r["reason_detail"]) <= 300, source  # clear, short, no payload
    assert not problems, "\n".join(problems)


def test_odd_but_valid_images_are_decoded_with_their_mode(corpus):
    exp, images, final, store = next(v for k, v in corpus.items() if k.endswith("crawl"))
    rows = {r["source"]: r for r in images.to_pylist()}
    assert rows["person/cmyk.jpg"]["mode"] == "CMYK"
    assert rows["person/gray16.png"]["mode"] in ("I;16", "I")
    assert rows["person/palette_alpha.png"]["mode"] == "P"
    assert rows["person/png_named.jpg"]["format"] == "PNG"
    assert (rows["person/exif_rotated.jpg"]["width"], rows["person/exif_rotated.jpg"]["height"]) == (300, 420)
    assert rows["person/animated.gif"]["format"] == "GIF"
    assert rows["Zoë Saldaña/unicode_label.jpg"]["identity"] == "Zoë Saldaña"  # labels are kept exactly


def test_path_like_labels_stay_labels(corpus):
    exp, images, *_ = next(v for k, v in corpus.items() if k.endswith(".parquet"))
    assert "../../etc" in images["identity"].to_pylist()


def test_a_malformed_record_index_is_a_clear_error(tmp_path):
    (tmp_path / "x.rec").write_bytes(b"")
    (tmp_path / "x.idx").write_text("1\t0\nnot-a-number\t12\n")
    with pytest.raises(InputError, match="non-integer key/offset"):
        open_source(str(tmp_path / "x.rec")).plan()
    (tmp_path / "y.rec").write_bytes(b"\x00" * 40)
    (tmp_path / "y.idx").write_text("0\t0\n1\t8\n")  # header record 0 with a bad magic
    with pytest.raises(InputError, match="bad magic"):
        open_source(str(tmp_path / "y.rec")).plan()


def test_a_compressed_tar_is_a_clear_error(tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "c.tar", "w:gz") as tar:
        tar.add(__file__, arcname="x/y.py")
    with pytest.raises(InputError, match="decompress it first"):
        open_source(str(tmp_path / "c.tar")).plan()


def _fetch_as(uid, crawl, queue):
    """Child process: give up root (when root) and fetch the whole crawl."""
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    src = open_source(crawl)
    queue.put(src.fetch(src.plan(), 1_000_000).to_pylist())


def test_an_unreadable_file_is_a_read_error(tmp_path):
    """chmod 000 stops everyone but root, so as root the read runs in a child that drops to nobody."""
    import multiprocessing as mp
    import shutil
    import tempfile

    crawl = tempfile.mkdtemp(prefix="unreadable-")  # outside pytest's 0700 tree, so nobody can walk it
    try:
        os.chmod(crawl, 0o755)
        os.makedirs(os.path.join(crawl, "person"), mode=0o755)
        for name, mode in (("ok.jpg", 0o644), ("locked.jpg", 0)):
            path = os.path.join(crawl, "person", name)
            with open(path, "wb") as fh:
                fh.write(b"\xff\xd8 some bytes")
            os.chmod(path, mode)
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_fetch_as, args=(65534 if os.geteuid() == 0 else None, crawl, queue))
        child.start()
        rows = {r["source"]: r for r in queue.get(timeout=60)}
        child.join(60)
        assert child.exitcode == 0
    finally:
        shutil.rmtree(crawl, ignore_errors=True)
    assert rows["person/ok.jpg"]["reason"] is None
    locked = rows["person/locked.jpg"]
    assert (locked["reason"], locked["data"]) == ("read_error", None)
    assert "PermissionError" in locked["reason_detail"]
