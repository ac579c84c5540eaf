"""curate report: a static HTML file with charts and galleries, opened in headless Chromium."""

import html
import json
import re
import shutil

import pytest
from browser import page
from click.testing import CliRunner

from curate.cli import main
from curate.report import CSP, _tile


@pytest.fixture(scope="module")
def report(scored_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    r = CliRunner().invoke(main, ["report", scored_run, "-o", str(path), "--identities", "6", "--per-identity", "4"])
    assert r.exit_code == 0, r.output
    return path


def test_report_is_self_contained_with_galleries(report):
    page = report.read_text()
    assert CSP in page and "<script" not in page
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched: every image inline
    assert page.count('class="chart"') >= 5
    assert page.count('class="face"') >= 6
    assert "far_from_dominant" in page and "no attribute source" in page


def test_untrusted_labels_are_escaped():
    tile = _tile({"reason": "far_from_dominant", "angle_to_dominant": 30.0, "quality": 5.0, "dup_sim": None,
                  "nearest_other_identity": "<script>alert(1)</script>", "source": '"><img src=x onerror=alert(1)>',
                  "image_id": "abc", "crop": None})
    assert "<script>" not in tile and "<img src=x" not in tile
    assert html.escape("<script>alert(1)</script>") in tile


def test_report_opens_in_headless_chromium_without_console_errors(report, tmp_path):
    with page(report.resolve().as_uri(), str(tmp_path / "profile")) as (evaluate, errors):
        got = json.loads(evaluate(
            "JSON.stringify({faces: [...document.querySelectorAll('img.face')].filter(i => i.complete && i.naturalWidth === 112).length,"
            " charts: [...document.querySelectorAll('img.chart')].filter(i => i.complete && i.naturalWidth > 0).length,"
            " galleries: document.querySelectorAll('section.identity').length})"))
    assert errors == []
    assert got["faces"] >= 6 and got["charts"] >= 5 and got["galleries"] >= 1, got


def test_report_shows_faces_not_hashes_and_the_thresholds_in_use(scored_run, report, tmp_path):
    """Near-duplicate clusters and unusable images as pictures (the sample crawl has a cat, an
    exact copy and broken files); the review line of the dominant-share chart is the scoring's own."""
    import json

    import pyarrow as pa

    from curate import audit
    from curate.report import _clusters

    page = report.read_text()
    assert "<h2>Duplicates and near-identical shots</h2>" in page and "<h2>Group photos</h2>" in page
    con = audit.connect(scored_run)
    a, b = [r[0] for r in con.execute("SELECT image_id FROM curated WHERE crop IS NOT NULL ORDER BY image_id LIMIT 2").fetchall()]
    html = _clusters(con, pa.table({"kind": ["near_identical"], "representative": [a], "identity": ["x"], "size": [2],
                                    "min_sim": [0.99], "duplicates": [[b]]}))
    assert html.count('class="face"') == 2 and "2 images, near_identical" in html
    lost = page[page.index("<h2>Images with no usable face</h2>"):page.index("<h2>Group photos</h2>")]
    assert "no_face" in lost and 'class="face"' in lost  # the cat, shown
    assert "decode_error" in lost and "cannot show" in lost  # broken bytes: the error, not a picture
    from curate.io.shards import ShardStore
    from curate.report import _scoring_config

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    assert CliRunner().invoke(main, ["score", str(run), "--min-dominant-share", "0.9"]).exit_code == 0
    store = ShardStore(str(run))
    assert _scoring_config(store, store.current_scoring())["min_dominant_share"] == 0.9
    assert json.load(open(run / "scoring.json"))["config"]["min_dominant_share"] == 0.9
