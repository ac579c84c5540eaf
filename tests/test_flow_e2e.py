"""The Prefect flow over real Ray on ~50 real images, and the CLI on top of it."""

import json
import os

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, sample_crawl):
    from curate.config import Resources, RunConfig, ScoreConfig
    from flows.curate_flow import curate_flow

    out = str(tmp_path_factory.mktemp("flow") / "out")
    kw = dict(input_path=str(sample_crawl), out=out, config=RunConfig(shard_size=10).to_dict(),
              resources=Resources(workers=2, batch_size=8).__dict__, progress=False,
              score_config=ScoreConfig().__dict__)
    first = curate_flow(**kw)
    again = curate_flow(**kw)
    return out, first, again


def test_flow_accounts_for_every_input(flow_run, sample_crawl):
    out, s, _ = flow_run
    n_files = sum(len(fs) for _, _, fs in os.walk(sample_crawl))
    assert s["items_planned"] == s["images"] == n_files and n_files >= 45
    assert s["kept"] + s["rejected"] == n_files == sum(s["reasons"].values())
    assert s["shards_done"] == s["shards"] == 6 and s["this_run"]["shards"] == 6
    assert {"ok", "no_face", "decode_error", "multi_face_ambiguous"} <= set(s["reasons"])
    con = duckdb.connect(os.path.join(out, "curate.duckdb"), read_only=True)
    try:
        total, distinct, kept = con.execute("SELECT count(*), count(DISTINCT source), count(*) FILTER (keep) FROM images").fetchone()
        planned = con.execute("SELECT count(*) FROM plan").fetchone()[0]
        faces = con.execute("SELECT count(*) FROM detections").fetchone()[0]
    finally:
        con.close()
    assert total == distinct == planned == n_files and kept == s["kept"] and faces == s["faces"]


def test_real_label_swaps_are_flagged_and_curated_shards_ranked(flow_run):
    out, s, _ = flow_run
    c = s["curation"]
    assert c["images"] == s["images"] and c["identities_merged"] == 0
    con = duckdb.connect(os.path.join(out, "curate.duckdb"), read_only=True)
    try:
        swaps = con.execute("SELECT c.source, s.reason, s.nearest_other_identity FROM scores s JOIN images c "
                            "USING (image_id) WHERE c.source LIKE '%zz_swap%' ORDER BY 1").fetchall()
        flagged = [r[0] for r in con.execute(
            "SELECT c.source FROM scores s JOIN images c USING (image_id) WHERE s.reason IN ('far_from_dominant', "
            "'non_dominant_subcenter', 'cross_id_conflict') ORDER BY 1").fetchall()]
        ranked = con.execute("SELECT bool_and(quality_rank >= 1), count(*) FROM curated").fetchone()
    finally:
        con.close()
    assert [(r[1] in ("far_from_dominant", "non_dominant_subcenter", "cross_id_conflict"), r[2]) for r in swaps] == \
        [(True, "tom_hanks"), (True, "t1_person_4")]  # flagged, and the true person is the nearest other identity
    # and nothing else among the real faces but lfw_small, which files three different people under one label
    others = [f for f in flagged if "zz_swap" not in f]
    assert len(flagged) - len(others) == 2 and all(f.startswith("lfw_small/") for f in others) and len(others) <= 2
    assert ranked == (True, s["images"])


def test_rerun_resumes_without_redoing_shards(flow_run):
    _, first, again = flow_run
    assert again["this_run"]["shards"] == 0
    assert {k: again[k] for k in ("images", "kept", "reasons")} == {k: first[k] for k in ("images", "kept", "reasons")}


def _scores(out: str):
    from curate.io.shards import ShardStore

    s = ShardStore.of(out)
    return pq.read_table(s.scores_file(s.current_scoring())).sort_by("image_id")


def test_cli_run_in_process_equals_the_flow_and_status(tmp_path, sample_crawl, flow_run):
    """A small crawl runs in this process (no Ray, no Prefect), with the flow's results to the bit
    (the same shards and batches: onnxruntime's results move in the 6th digit with the batch)."""
    runner = CliRunner()
    out = str(tmp_path / "cli-out")
    r = runner.invoke(main, ["run", str(sample_crawl), "--out", out, "--shard-size", "10", "--batch-size", "8", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output[r.output.index("{"):])
    assert s["this_run"]["engine"] == "local" and flow_run[1]["this_run"]["engine"] == "flow"
    assert s["images"] == flow_run[1]["images"] and s["reasons"] == flow_run[1]["reasons"]
    assert _scores(out).equals(_scores(flow_run[0]))
    assert os.path.exists(s["audit"]["report"])
    r = runner.invoke(main, ["status", out])
    assert r.exit_code == 0 and "shards       6/6 done" in r.output
    r = runner.invoke(main, ["score", out, "--far-angle", "10", "--json"])  # re-tune without models
    assert r.exit_code == 0, r.output
    tuned = json.loads(r.output)
    assert tuned["far_angle"] == 10.0 and tuned["threshold_source"]["far_angle"] == "config"
    # the same `run` again keeps that newer scoring: nothing silently reverts to the defaults
    r = runner.invoke(main, ["run", str(sample_crawl), "--out", out, "--shard-size", "10", "--batch-size", "8", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    again = json.loads(r.output[r.output.index("{"):])
    assert again["curation"]["score_digest"] == tuned["score_digest"] and again["curation"]["far_angle"] == 10.0
    # a different config into the same directory: one clean line naming the setting, exit code of OutputError
    r = runner.invoke(main, ["run", str(sample_crawl), "--out", out, "--shard-size", "30", "--no-progress"])
    assert r.exit_code == 9 and "shard_size: 30 here, 10 in the run" in r.output and "Traceback" not in r.output


def test_flow_ends_with_audits_and_report(flow_run):
    out, s, again = flow_run
    a = s["audit"]
    digest = s["curation"]["score_digest"]
    assert a["dir"] == os.path.join(os.path.abspath(out), f"audit-{digest}")
    # every question either wrote its result or says why not (this run has no attribute source)
    from curate.audit import queries

    assert set(a["written"]) | set(a["skipped"]) == set(queries())
    assert set(a["skipped"]) == {"demographic_balance", "quality_by_demographic", "demographic_drop_rates"}
    assert all("no attribute source" in m for m in a["skipped"].values())
    reasons = pq.read_table(a["written"]["reasons"]["path"]).to_pylist()
    assert sum(r["images"] for r in reasons) == s["images"]
    assert os.path.getsize(a["report"]) > 10_000 and a["report"].endswith(f"report-{digest}.html")
    assert again["audit"]["written"].keys() == a["written"].keys()  # a rerun rewrites them in place
