"""facecurate.score_embeddings (issue 27): the scorer on arrays you bring, the same flags as
`curate score` on the same faces, bad input refused with a clear message."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import facecurate
from curate.errors import ConfigError, InputError
from curate.io.shards import ShardStore
from curate.schema import decode_embeddings


def run_arrays(run: str):
    """The faces of a scored run as a user with their own embeddings would hold them."""
    store = ShardStore.of(run)
    t = pq.ParquetDataset(store.completed_files("images")).read()
    t = t.filter(pc.equal(t["reason"], "ok"))
    emb = decode_embeddings(t["embedding"]).astype(np.float32) * t["feat_norm"].to_numpy()[:, None]
    signals = {k: t[k].to_numpy(zero_copy_only=False) for k in ("det_score", "sharpness", "brightness", "contrast",
                                                                  "detail", "face_size")}
    signals["landmarks"] = np.array(t["landmarks"].to_pylist(), np.float32)
    return store, t, emb, signals


def test_the_api_flags_what_curate_score_flags(scored_run):
    """Same faces, same card: the same reason for every face, except what only the photos can tell
    (a copy's hashes; the other faces of a group photo)."""
    store, t, emb, signals = run_arrays(scored_run)
    out = facecurate.score_embeddings(emb, t["identity"], image_ids=t["image_id"], signals=signals,
                                      card=store.recognizer_card_file(), detector="yunet")
    assert out["image_id"].to_pylist() == t["image_id"].to_pylist() and set(facecurate.COLUMNS) <= set(out.column_names)
    run = pq.read_table(store.scores_file(store.current_scoring()))
    by_id = dict(zip(run["image_id"].to_pylist(), run["reason"].to_pylist()))
    single = np.asarray(pc.less_equal(pc.fill_null(t["n_faces"], 1), 1).to_numpy(zero_copy_only=False), bool)
    same = [(a, by_id[i]) for i, a, one in zip(out["image_id"].to_pylist(), out["reason"].to_pylist(), single)
            if one and by_id[i] != "duplicate"]
    assert len(same) > 40 and all(a == b for a, b in same), [x for x in same if x[0] != x[1]]
    q_run = dict(zip(run["image_id"].to_pylist(), run["quality"].to_pylist()))
    q = [(a, q_run[i]) for i, a, one in zip(out["image_id"].to_pylist(), out["quality"].to_pylist(), single) if one]
    np.testing.assert_allclose([a for a, _ in q], [b for _, b in q], atol=0.05)


def test_unit_embeddings_and_no_card_still_score_with_the_warning():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    labels = np.repeat([f"p{i}" for i in range(20)], 15)
    emb = centers[np.arange(300) // 15] + rng.normal(scale=0.3, size=(300, 32))
    emb[:5] = centers[7]  # five faces of p7 filed under p0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    with pytest.warns(UserWarning, match="no calibration"):
        out = facecurate.score_embeddings(emb, labels)
    reason = out["reason"].to_pylist()
    assert {reason[i] for i in range(5)} <= {"far_from_dominant", "cross_id_conflict"}
    assert sum(r == "ok" for r in reason[5:]) >= 0.95 * 295
    assert out["quality"].null_count == 300  # unit rows carry no norm: no quality, nothing unidentifiable
    df = facecurate.score_embeddings(emb, labels, pandas=True, far_angle=60.0)
    assert list(df["image_id"][:2]) == ["row0", "row1"]


def test_a_reference_of_your_own_embeddings_calibrates():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(30, 32))
    ref_labels = np.repeat([f"r{i}" for i in range(30)], 10)
    ref = centers[np.arange(300) // 10] + rng.normal(scale=0.3, size=(300, 32))
    emb = centers[np.arange(100) // 10] + rng.normal(scale=0.3, size=(100, 32))
    out = facecurate.score_embeddings(emb, np.repeat([f"p{i}" for i in range(10)], 10), reference=(ref, ref_labels))
    assert out["keep"].to_pylist().count(True) >= 95


def test_bad_input_is_refused_clearly():
    emb = np.ones((4, 8), np.float32)
    with pytest.raises(InputError, match="4 values|3 values"):
        facecurate.score_embeddings(emb, ["a", "b", "c"])
    with pytest.raises(ConfigError, match="unknown option"):
        facecurate.score_embeddings(emb, list("aabb"), far_angel=70)
    with pytest.raises(InputError, match="repeat"):
        facecurate.score_embeddings(emb, list("aabb"), image_ids=["x", "x", "y", "z"])
    with pytest.raises(InputError, match=r"\(N, D\)"):
        facecurate.score_embeddings(np.ones(4), list("aabb"))
    with pytest.raises(InputError, match="20 of 3 identities"):
        facecurate.score_embeddings(emb, list("aabb"), reference=(emb, list("aabb")))
    assert isinstance(facecurate.score_embeddings(pa.array(emb.tolist()), list("aabb")), pa.Table)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- tested: api -->\n```python\n(.*?)```", text, re.S).group(1)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 16))
    np.save(tmp_path / "embeddings.npy", (centers[np.arange(200) // 20] + rng.normal(scale=0.3, size=(200, 16))) * 20)
    np.save(tmp_path / "labels.npy", np.repeat([f"person{i}" for i in range(10)], 20).astype(object))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    with pytest.warns(UserWarning):
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["clean"].num_rows >= 180


def test_score_embeddings_writes_a_run_that_every_command_reads(scored_run, tmp_path):
    """`curate score-embeddings` on a .npy of a run's faces: a run directory that `score`, `sql`,
    `audit` and `report` read like any other; `export` says there is no photo to export."""
    from click.testing import CliRunner

    from curate.cli import main

    store, t, emb, _ = run_arrays(scored_run)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "labels.npy", np.array(t["identity"].to_pylist(), object))
    (tmp_path / "ids.txt").write_text("\n".join(t["image_id"].to_pylist()) + "\n")
    out = tmp_path / "run"
    cli = CliRunner()
    r = cli.invoke(main, ["score-embeddings", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "labels.npy"),
                          "--ids", str(tmp_path / "ids.txt"), "--out", str(out), "--calibration", store.recognizer_card_file()])
    assert r.exit_code == 0, r.output
    assert f"{len(emb):,} embeddings of dimension {emb.shape[1]}" in r.output and "(card)" in r.output
    r = cli.invoke(main, ["sql", str(out), "SELECT count(*) AS n, count(*) FILTER (WHERE keep) AS kept FROM curated",
                          "--format", "csv"])
    assert r.exit_code == 0 and r.output.splitlines()[1].startswith(f"{len(emb)},"), r.output
    assert cli.invoke(main, ["audit", str(out), "-q", "reasons"]).exit_code == 0
    r = cli.invoke(main, ["report", str(out)])
    assert r.exit_code == 0 and "Quality" in open(r.output.strip().splitlines()[-1]).read(), r.output
    r = cli.invoke(main, ["export", str(out), str(tmp_path / "x")])
    assert r.exit_code != 0 and "no crop" in r.output, r.output
    # again into the same directory: resumed, nothing duplicated
    r = cli.invoke(main, ["score-embeddings", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "labels.npy"),
                          "--ids", str(tmp_path / "ids.txt"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = cli.invoke(main, ["sql", str(out), "SELECT count(*) FROM images", "--format", "csv"])
    assert r.output.splitlines()[1] == str(len(emb))
    bad = cli.invoke(main, ["score-embeddings", str(tmp_path / "emb.npy"), "--labels", str(tmp_path / "ids.txt") + "x",
                            "--out", str(tmp_path / "r2")])
    assert bad.exit_code != 0 and "neither a column" in bad.output
