"""Look before hours of work: `curate run --dry-run` plans the crawl, times a sample through the
real spine, prints what a user needs to decide, and writes nothing."""

import json
import os

import pyarrow as pa
from click.testing import CliRunner

from curate.cli import main
from curate.survey import plan_summary, summary_lines


def test_plan_summary_counts_identities_and_formats():
    index = pa.table({"source": ["a/1.jpg", "a/2.JPG", "a/3.png", "b/1.jpg", "c/x.webp", "loose.jpg", "t.rec#5"],
                      "identity": ["a", "a", "a", "b", "c", None, None]})
    s = plan_summary(index)
    assert s["identities"] == 3 and s["unlabelled"] == 2
    assert s["per_identity"] == {"min": 1, "median": 1.0, "mean": 1.67, "max": 3}
    assert s["histogram"]["1"] == 2 and s["histogram"]["2-4"] == 1
    assert s["formats"] == {".jpg": 4, ".png": 1, ".webp": 1, ".rec": 1}
    assert "7 images of 3 identities" in summary_lines(s)[0]


def test_dry_run_prints_the_plan_and_an_eta_and_writes_nothing(sample_crawl, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", str(sample_crawl), "--out", str(out), "--dry-run"])
    assert r.exit_code == 0, r.output
    for word in ("plan ", "per identity", "formats", "bytes", "sample", "eta"):
        assert word in r.output, (word, r.output)
    assert not os.path.exists(out)
    r = CliRunner().invoke(main, ["run", str(sample_crawl), "--out", str(out), "--dry-run", "--json"])
    s = json.loads(r.output[r.output.index("{"):])
    n = sum(1 for _, _, files in os.walk(sample_crawl) for f in files)
    assert s["items"] == n and s["bytes"] > 0 and s["sample"]["images"] == min(32, n)
    assert s["sample"]["seconds_per_image"] > 0 and s["eta_seconds"] > 0
    assert not os.path.exists(out)


def test_a_stored_plan_is_summarised_without_its_sources(tmp_path):
    import pyarrow.parquet as pq

    from curate.survey import index_summary

    n = 5000
    t = pa.table({"item": list(range(n)), "source": [f"p{i % 50}/{i}.jpg" for i in range(n)],
                  "identity": [f"p{i % 50}" for i in range(n)]})
    pq.write_table(t, tmp_path / "index.parquet", row_group_size=1000)
    s = index_summary(str(tmp_path / "index.parquet"), sample_rows=1500)
    assert s["items"] == n and s["identities"] == 50 and s["per_identity"]["max"] == 100
    assert s["formats_sampled"] and s["formats"] == {".jpg": 2000}  # two row groups read, not five
