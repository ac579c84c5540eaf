"""Review overrides: decisions made on the static review page (clicked in headless Chromium) are
imported, applied by `curate score` on top of the automatic ones (which stay), shown in the audits
and the report, and followed by the export."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import page
from click.testing import CliRunner

from curate import reviews as R
from curate.cli import main
from curate.errors import InputError


def test_the_latest_decision_wins_and_the_automatic_one_stays():
    scores = pa.table({"image_id": ["a1", "a2", "b1", "b2"], "identity": ["a", "a", "b", "b"],
                       "spine_reason": ["ok", "ok", "ok", "no_face"], "keep": [False, True, True, False],
                       "reason": ["far_from_dominant", "ok", "ok", "no_face"]})
    reviews = pa.Table.from_pylist([
        {"scope": "identity", "key": "a", "action": "reject", "value": None, "reviewer": "ann", "at": "2026-01-01T00:00:00", "note": None},
        {"scope": "image", "key": "a1", "action": "keep", "value": None, "reviewer": "bob", "at": "2026-01-02T00:00:00", "note": "it is her"},
        {"scope": "identity", "key": "b", "action": "keep", "value": None, "reviewer": "ann", "at": "2026-01-01T00:00:00", "note": None},
        {"scope": "identity", "key": "b", "action": "relabel", "value": "bea", "reviewer": "ann", "at": "2026-01-03T00:00:00", "note": None},
    ], schema=R.REVIEWS)
    out = R.apply(scores, reviews).to_pylist()
    by = {r["image_id"]: r for r in out}
    assert (by["a1"]["keep"], by["a1"]["reason"]) == (True, "review_keep")  # the image's own decision wins
    assert "by bob" in by["a1"]["review"] and "it is her" in by["a1"]["review"]
    assert (by["a2"]["keep"], by["a2"]["reason"], by["a2"]["auto_reason"]) == (False, "review_reject", "ok")
    assert by["a1"]["auto_keep"] is False and by["a1"]["auto_reason"] == "far_from_dominant"
    # b: the latest identity decision is the relabel; keep/reason stay automatic; the missing face stays missing
    assert [by[k]["label"] for k in ("b1", "b2")] == ["bea", "bea"] and by["b1"]["reason"] == "ok"
    assert (by["b2"]["keep"], by["b2"]["reason"]) == (False, "no_face")
    assert R.overrides(R.apply(scores, reviews)) == 4


def test_bad_review_files_are_refused(scored_run, tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{"scope": "image", "key": "nope", "action": "keep"}]))
    with pytest.raises(InputError, match="nobody decided"):
        R.import_file(scored_run, str(f))
    with pytest.raises(InputError, match="name no image or identity"):
        R.import_file(scored_run, str(f), reviewer="ann")
    f.write_text(json.dumps([{"scope": "image", "key": "x", "action": "rename", "reviewer": "ann"}]))
    with pytest.raises(InputError, match="allowed"):
        R.import_file(scored_run, str(f))
    f.write_text(json.dumps([{"scope": "image", "key": "x", "action": "relabel", "reviewer": "ann"}]))
    with pytest.raises(InputError, match="needs the new label"):
        R.import_file(scored_run, str(f))


def test_a_face_relabelled_is_kept_under_its_new_label():
    """'This face is Tony Blair': the natural fix of a label swap. The face is kept and exported
    under the new label; its identity's other faces are untouched."""
    scores = pa.table({"image_id": ["c1", "c2"], "identity": ["chavez", "chavez"], "spine_reason": ["ok", "ok"],
                       "keep": [False, True], "reason": ["far_from_dominant", "ok"]})
    reviews = pa.Table.from_pylist([{"scope": "image", "key": "c1", "action": "relabel", "value": "Tony_Blair",
                                     "reviewer": "ann", "at": "2026-01-01T00:00:00", "note": None}], schema=R.REVIEWS)
    by = {r["image_id"]: r for r in R.apply(scores, reviews).to_pylist()}
    assert (by["c1"]["keep"], by["c1"]["reason"], by["c1"]["label"]) == (True, "review_keep", "Tony_Blair")
    assert by["c1"]["auto_reason"] == "far_from_dominant" and "relabel to Tony_Blair by ann" in by["c1"]["review"]
    assert (by["c2"]["keep"], by["c2"]["label"]) == (True, "chavez")


def test_decisions_made_on_the_review_page_are_applied(scored_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    r = CliRunner().invoke(main, ["report", str(run)])
    assert r.exit_code == 0, r.output
    review_page = next(run.glob("review-*.html"))
    with page(review_page.as_uri(), str(tmp_path / "profile")) as (evaluate, errors):
        n_faces = evaluate("document.querySelectorAll('img.face').length")
        assert n_faces >= 2
        made = json.loads(evaluate("""(() => {
            document.getElementById('reviewer').value = 'ann';
            const face = document.querySelector('button[data-scope="image"][data-action="keep"]');
            face.click();
            const ids = [...document.querySelectorAll('section.identity')];
            const other = ids.find(s => !s.contains(face));
            other.querySelector('button[data-scope="identity"][data-action="reject"]').click();
            const input = ids[0].querySelector('input');
            input.value = 'renamed person';
            ids[0].querySelector('button[data-action="relabel"]').click();
            return window.facecurateReviews();
        })()"""))
    assert errors == []
    assert {(d["scope"], d["action"]) for d in made} == {("image", "keep"), ("identity", "reject"), ("identity", "relabel")}
    assert all(d["reviewer"] == "ann" and d["at"] for d in made)
    f = tmp_path / "reviews.json"
    f.write_text(json.dumps(made))
    r = CliRunner().invoke(main, ["review", "import", str(run), str(f)])
    assert r.exit_code == 0 and "3 imported" in r.output, r.output
    assert "0 imported, 3 already there" in CliRunner().invoke(main, ["review", "import", str(run), str(f)]).output
    from curate.io.shards import ShardStore

    store = ShardStore(str(run))
    before = store.current_scoring()
    r = CliRunner().invoke(main, ["score", str(run)])
    assert r.exit_code == 0, r.output
    # the reviews make a new scoring with the same thresholds; the output names the one now current
    assert f"is current now (was {before})" in r.output and store.current_scoring() in r.output
    assert "changed" not in r.output
    scores = pq.read_table(store.scores_file(store.current_scoring())).to_pylist()
    face = next(d for d in made if d["scope"] == "image")
    row = next(s for s in scores if s["image_id"] == face["key"])
    assert (row["keep"], row["reason"]) == (True, "review_keep") and row["auto_keep"] is False
    rejected = next(d for d in made if d["action"] == "reject")["key"]
    assert all(s["reason"] == "review_reject" or s["spine_reason"] != "ok" for s in scores if s["identity"] == rejected)
    renamed = next(d for d in made if d["action"] == "relabel")["key"]
    assert {s["label"] for s in scores if s["identity"] == renamed} == {"renamed person"}
    r = CliRunner().invoke(main, ["audit", str(run), "-q", "review_overrides", "--format", "json"])
    assert r.exit_code == 0 and "review_keep" in r.output, r.output
    r = CliRunner().invoke(main, ["report", str(run)])
    assert "review_keep" in open(r.output.strip().splitlines()[-1]).read()
    r = CliRunner().invoke(main, ["score", str(run), "--far-angle", "70"])
    assert r.exit_code == 0 and "changed      far_angle" in r.output and "-> 70.0 (config)" in r.output, r.output
    r = CliRunner().invoke(main, ["score", str(run)])  # no option: the current scoring's thresholds stay
    assert r.exit_code == 0 and "changed" not in r.output, r.output
    r = CliRunner().invoke(main, ["export", str(run), str(tmp_path / "x"), "--format", "folder"])
    assert r.exit_code == 0, r.output
    exported = set(pq.read_table(tmp_path / "x" / "manifest.parquet")["identity"].to_pylist())
    assert rejected not in exported and (renamed not in exported)
    assert "renamed person" in exported or not any(s["keep"] for s in scores if s["identity"] == renamed)
