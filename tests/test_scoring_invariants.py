"""Scoring survives the edges of a crawl, and its invariants hold over random crawls (hypothesis):
every input row gets exactly one scores row, keep holds exactly when reason is 'ok', identity
counts add up, re-scoring is idempotent, and any partition size gives the in-memory result."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_partitioned import assert_same

from curate import partitioned as P
from curate import reviews as R
from curate.config import ScoreConfig
from curate.curation import READ
from curate.scoring import score_table
from curate.testing.synth import EmbeddingCrawl

CFG = ScoreConfig()


def crawl_table(n: int, ids: int, faceless: np.ndarray | None = None, seed: int = 0, dups: float = 0.05) -> pa.Table:
    """n rows of ``ids`` identities (dim 16); rows where ``faceless`` is set have no face."""
    t = EmbeddingCrawl(n, ids, dim=16, dups=dups, seed=seed, shard_size=max(n, 1)).shard(0)
    if faceless is not None and faceless.any():
        mask = pa.array(faceless)
        t = t.set_column(t.schema.get_field_index("embedding"), "embedding",
                         pc.if_else(mask, pa.nulls(n, t["embedding"].type), t["embedding"]))
        t = t.set_column(t.schema.get_field_index("keep"), "keep", pc.and_(t["keep"], pc.invert(mask)))
        t = t.set_column(t.schema.get_field_index("reason"), "reason", pc.if_else(mask, "no_face", t["reason"]))
    return t


def write_shards(d: str, t: pa.Table, shard_size: int) -> list[tuple[int, str]]:
    os.makedirs(os.path.join(d, "images"), exist_ok=True)
    os.makedirs(os.path.join(d, "curated"), exist_ok=True)
    files = []
    for s, a in enumerate(range(0, len(t), shard_size)):
        f = os.path.join(d, "images", f"part-{s:06d}-run.parquet")
        pq.write_table(t.slice(a, shard_size), f)
        files.append((s, f))
    return files


def score_dir(d: str, files, part_rows: int, digest: str = "d") -> tuple[pa.Table, pa.Table, dict]:
    w, calib, _ = P.score_partitioned(os.path.join(d, "_scoring", digest), d, files, CFG, None,
                                      R.REVIEWS.empty_table(), digest, part_rows)
    P.stream_outputs(w, os.path.join(d, f"scores-{digest}.parquet"), os.path.join(d, f"identities-{digest}.parquet"))
    P.remove(w)
    return (pq.read_table(os.path.join(d, f"scores-{digest}.parquet")),
            pq.read_table(os.path.join(d, f"identities-{digest}.parquet")), calib)


def check_invariants(t: pa.Table, scores: pa.Table, identities: pa.Table) -> None:
    # every input row exactly once, in input order
    assert scores["image_id"].to_pylist() == t["image_id"].to_pylist()
    # keep exactly when reason is 'ok'
    assert scores["keep"].to_pylist() == [r == "ok" for r in scores["reason"].to_pylist()]
    # identity counts add up: faces scored and kept per identity, over every identity with a scored face
    cand = scores.filter(pa.array(pc.is_valid(t["embedding"]).to_numpy(zero_copy_only=False)
                                  & t["keep"].to_numpy(zero_copy_only=False)))
    want = {r["values"]: r["counts"] for r in pc.value_counts(cand["identity"]).to_pylist()}
    got = dict(zip(identities["identity"].to_pylist(), identities["faces"].to_pylist())) if len(identities) else {}
    assert got == want
    if want:
        kept = {r["values"]: r["counts"] for r in pc.value_counts(scores.filter(scores["keep"])["identity"]).to_pylist()}
        assert dict(zip(identities["identity"].to_pylist(), identities["kept"].to_pylist())) == \
            {k: kept.get(k, 0) for k in want}
        assert sum(identities["kept"].to_pylist()) == pc.sum(scores["keep"]).as_py()


EDGES = {
    "no face at all": dict(n=6, ids=2, faceless="all"),
    "one face": dict(n=1, ids=1),
    "one face among faceless rows": dict(n=5, ids=2, faceless="all-but-one"),
    "one identity": dict(n=30, ids=1),
    "every face in one identity, partitions outnumber it": dict(n=40, ids=1, part_rows=3),
    "more partitions than identities": dict(n=24, ids=3, part_rows=2),
    "a partition with no faces": dict(n=20, ids=4, part_rows=4, faceless="half"),
}


@pytest.mark.parametrize("name", list(EDGES))
def test_every_scorer_path_survives_the_edges(name, tmp_path):
    e = EDGES[name]
    n = e["n"]
    faceless = {"all": np.ones(n, bool), "all-but-one": np.arange(n) > 0, "half": np.arange(n) % 2 == 0,
                None: None}[e.get("faceless")]
    t = crawl_table(n, e["ids"], faceless)
    whole_scores, whole_ids, _ = score_table(t.select(READ), CFG)
    scores, identities, calib = score_dir(str(tmp_path), write_shards(str(tmp_path), t, 7), e.get("part_rows", 1000))
    check_invariants(t, scores, identities)
    assert_same(scores, R.apply(whole_scores, R.REVIEWS.empty_table()))
    if e.get("faceless") == "all":
        assert set(scores["reason"].to_pylist()) == {"no_face"} and len(identities) == 0
        assert calib["far_angle"] is None


crawls = st.fixed_dictionaries({
    "n": st.integers(1, 48), "ids": st.integers(1, 6), "seed": st.integers(0, 2**16),
    "faceless": st.floats(0, 1), "dups": st.sampled_from([0.0, 0.2]),
    "shard_size": st.integers(3, 20), "part_rows": st.integers(4, 60),
})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=crawls)
def test_scoring_invariants_over_random_crawls(c, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("prop"))
    rng = np.random.default_rng(c["seed"])
    t = crawl_table(c["n"], c["ids"], rng.random(c["n"]) < c["faceless"], seed=c["seed"], dups=c["dups"])
    files = write_shards(d, t, c["shard_size"])
    scores, identities, _ = score_dir(d, files, c["part_rows"])
    check_invariants(t, scores, identities)
    # any partition size gives the in-memory result
    whole_scores, whole_ids, _ = score_table(t.select(READ), CFG)
    assert_same(scores, R.apply(whole_scores, R.REVIEWS.empty_table()))
    assert_same(identities, whole_ids)
    # re-scoring is idempotent
    again, again_ids, _ = score_dir(d, files, c["part_rows"])
    assert_same(again, scores)
    assert_same(again_ids, identities)
    shutil.rmtree(d, ignore_errors=True)
