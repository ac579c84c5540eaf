"""sql/ audits, `curate sql` (read-only by default, parameters bound) and demographic attributes."""

import json
import os
import re
import shutil

import numpy as np
import onnx
import pyarrow as pa
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from curate import audit
from curate.cli import main
from curate.errors import ConfigError, InputError
from models.cards import file_sha256


@pytest.fixture()
def run_copy(scored_run, tmp_path):
    """A private copy of the scored run, for tests that add attributes."""
    dst = tmp_path / "run"
    shutil.copytree(scored_run, dst)
    return str(dst)


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r


def test_every_question_declares_its_parameters_and_formats_nothing():
    qs = audit.queries()
    assert len(qs) >= 10
    for q in qs.values():
        assert q.requires, q.name
        assert "{" not in q.sql and "%s" not in q.sql and "%(" not in q.sql, q.name  # no Python formatting
        assert set(re.findall(r"\$(\w+)", q.sql)) == {p.name for p in q.params}, q.name


def test_all_questions_run_on_a_scored_run(scored_run):
    con = audit.connect(scored_run)
    qs = audit.queries()
    results = {}
    for name, q in qs.items():
        if "attributes" in q.requires:
            with pytest.raises(audit.MissingSource, match="no attribute source"):
                audit.run_query(con, q)
            continue
        results[name] = audit.run_query(con, q)
    n = con.execute("SELECT count(*) FROM scores").fetchone()[0]
    assert n == con.execute("SELECT count(*) FROM plan").fetchone()[0]  # every input, once
    assert sum(results["reasons"]["images"].to_pylist()) == n
    ba = {r["stage"]: r for r in results["before_after"].to_pylist()}
    assert ba["before"]["images"] == n and ba["after"]["images"] == con.execute("SELECT count(*) FROM scores WHERE keep").fetchone()[0]
    hist = results["quality_histogram"]
    assert sum(hist["kept"].to_pylist()) + sum(hist["rejected"].to_pylist()) == con.execute(
        "SELECT count(quality) FROM scores").fetchone()[0]
    sizes = results["identity_sizes"]
    assert sum(sizes["identities_before"].to_pylist()) == sum(sizes["identities_after"].to_pylist())
    noise = {r["identity"]: r for r in results["noise_per_identity"].to_pylist()}
    flagged = con.execute("SELECT identity FROM scores WHERE reason = 'far_from_dominant'").fetchall()
    assert flagged and all(noise[i]["noisy"] >= 1 for (i,) in flagged)  # the label swaps
    sweep = results["far_angle_sweep"]["faces_rejected"].to_pylist()
    assert sweep == sorted(sweep, reverse=True)  # a larger angle never rejects more


def test_parameters_are_bound_and_typed(scored_run):
    q = audit.queries()["quality_histogram"]
    con = audit.connect(scored_run)
    assert len(audit.run_query(con, q, {"bins": "4"})) <= 4
    with pytest.raises(ConfigError, match="wants a int"):
        q.bind({"bins": "4; DROP VIEW scores"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        q.bind({"nope": "1"})
    # a hostile string value is data, not SQL
    r = cli("sql", scored_run, "SELECT count(*) AS n FROM scores WHERE identity = $who", "-p", "who=x' OR '1'='1",
            "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [{"n": 0}]


@pytest.mark.parametrize("stmt", [
    "CREATE TABLE t AS SELECT 1",
    "DROP VIEW scores",
    "COPY (SELECT 1) TO 'x.csv'",
    "INSERT INTO t VALUES (1)",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SET enable_external_access = true",
    "SELECT 1; INSERT INTO t VALUES (1)",  # checked before anything runs
])
def test_sql_is_read_only_by_default(scored_run, stmt):
    r = cli("sql", scored_run, stmt)
    assert r.exit_code == 3, r.output
    assert "error:" in r.output


def test_sql_write_mode_opens_the_duckdb_file(run_copy):
    r = cli("sql", run_copy, "CREATE TABLE notes AS SELECT 'checked' AS v", "--write")
    assert r.exit_code == 0, r.output
    import duckdb

    con = duckdb.connect(os.path.join(run_copy, "curate.duckdb"), read_only=True)
    assert con.execute("SELECT v FROM notes").fetchone() == ("checked",)


def test_audit_cli_formats(scored_run, tmp_path):
    r = cli("audit", scored_run, "-q", "reasons", "-q", "before_after")
    assert r.exit_code == 0 and "== reasons" in r.output and "far_from_dominant" in r.output
    r = cli("audit", scored_run, "-q", "reasons", "--format", "json")
    assert json.loads(r.output)["reasons"][0]["images"] > 0
    r = cli("audit", scored_run, "--format", "parquet", "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "noise_per_identity.parquet").exists()
    assert not (tmp_path / "a" / "demographic_balance.parquet").exists()  # no attribute source: nothing invented
    assert "no attribute source" in r.output
    r = cli("audit", scored_run, "-q", "demographic_balance")
    assert r.exit_code == 3 and "curate attributes" in r.output
    assert cli("audit", scored_run, "--list").output.count("\n") == len(audit.queries())


def test_metadata_attributes_and_demographic_audits(run_copy, tmp_path):
    meta = tmp_path / "people.csv"
    con = audit.connect(run_copy)
    ids = [r[0] for r in con.execute("SELECT DISTINCT identity FROM scores ORDER BY 1").fetchall()]
    lines = ["identity,gender,country"] + [f"{i},{'female' if k % 2 else 'male'},{'' if k == 0 else 'C' + str(k % 3)}"
                                           for k, i in enumerate(ids[:-1])]  # last identity: no metadata
    meta.write_text("\n".join(lines) + "\n")
    r = cli("attributes", run_copy, "--metadata", meta)
    assert r.exit_code == 0, r.output
    con = audit.connect(run_copy)
    bal = audit.run_query(con, audit.queries()["demographic_balance"])
    n = con.execute("SELECT count(*) FROM scores").fetchone()[0]
    for attr in ("gender", "country"):
        rows = [x for x in bal.to_pylist() if x["attribute"] == attr]
        assert sum(x["images_before"] for x in rows) == n  # every image counted once, '(none)' included
        assert any(x["value"] == "(none)" for x in rows)
        for x in rows:
            assert x["pct_before_lo"] <= x["pct_before"] <= x["pct_before_hi"]
    groups = audit.run_query(con, audit.queries()["quality_by_demographic"])
    assert set(groups["attribute"].to_pylist()) == {"gender", "country"}
    # drop rates on these real faces: per group, 'any' counts every rejected image of the group
    drops = audit.run_query(con, audit.queries()["demographic_drop_rates"]).to_pylist()
    rej = dict(con.execute("SELECT v.value, count(*) FILTER (WHERE NOT s.keep) FROM scores s JOIN attributes v "
                           "USING (image_id) WHERE v.attribute = 'gender' GROUP BY 1").fetchall())
    assert {x["value"]: x["dropped"] for x in drops if x["attribute"] == "gender" and x["reason"] == "any"} == rej
    assert all(x["pct_lo"] <= x["pct_dropped_per_person"] <= x["pct_hi"] for x in drops)
    with pytest.raises(InputError, match="duplicate"):
        from curate.demographics import add_metadata

        dup = tmp_path / "dup.csv"
        dup.write_text(f"identity,gender\n{ids[0]},male\n{ids[0]},female\n")
        add_metadata(run_copy, str(dup))


def _welch(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def _group_stats(rej, mq, n=600, seed=0):
    import duckdb

    rng = np.random.default_rng(seed)
    rows = []
    for g in rej:
        for i in range(n):
            rows.append((f"{g}{i}", g, bool(rng.random() > rej[g]), float(np.clip(rng.normal(mq[g], 20), 0, 100))))
    scores = pa.table({"image_id": [r[0] for r in rows], "identity": [r[0] for r in rows],  # a person a photo
                       "keep": [r[2] for r in rows], "quality": [r[3] for r in rows]})
    attrs = pa.table({"image_id": [r[0] for r in rows], "attribute": ["group"] * len(rows), "value": [r[1] for r in rows]})
    con = duckdb.connect()
    con.register("scores", scores)
    con.register("attributes", attrs)
    out = audit.run_sql(con, audit.queries()["quality_by_demographic"].sql, {"z_crit": 3.0, "min_people": 5})
    return {r["value"]: r for r in out.to_pylist()}, rows


def test_groups_that_differ_significantly_are_flagged():
    """The fairness question on synthetic data: same distributions -> nothing flagged; group B
    rejected more often and with lower quality -> B flagged, with the largest |z|."""
    same, _ = _group_stats({"A": 0.1, "B": 0.1, "C": 0.1}, {"A": 50.0, "B": 50.0, "C": 50.0}, seed=3)
    assert not any(r["flagged"] for r in same.values())
    out, rows = _group_stats({"A": 0.1, "B": 0.3, "C": 0.1}, {"A": 50.0, "B": 40.0, "C": 50.0})
    assert out["B"]["flagged"]
    assert abs(out["B"]["z_rejection"]) == max(abs(r["z_rejection"]) for r in out.values())
    rej = lambda inside: [0.0 if r[2] else 1.0 for r in rows if (r[1] == "B") == inside]  # noqa: E731
    assert out["B"]["z_rejection"] == pytest.approx(_welch(rej(True), rej(False)), abs=0.01)
    assert out["B"]["z_quality"] < -3


def test_one_persons_photos_are_one_sample():
    """Demographic tests count people: a 'group' that is one person with 80 photos, all rejected, is
    too few people, not a significant group (photo by photo its z would be about 9); and 30 people of
    a group each losing the same share as the rest is no difference, however many photos each has."""
    import duckdb

    rng = np.random.default_rng(1)
    rows = []  # (image_id, identity, value, keep, reason, quality)
    for k in range(80):
        rows.append((f"solo{k}", "solo", "X", False, "far_from_dominant", 50.0))
    for g in ("Y", "Z"):
        for person in range(30):
            for k in range(int(rng.integers(5, 40))):
                keep = bool(rng.random() > 0.1)
                rows.append((f"{g}{person}_{k}", f"{g}{person}", g, keep, "ok" if keep else "unidentifiable", 50.0))
    cols = list(zip(*rows))
    con = duckdb.connect()
    con.register("scores", pa.table({"image_id": cols[0], "identity": cols[1], "keep": cols[3], "reason": cols[4],
                                     "quality": pa.array(cols[5], pa.float64())}))
    con.register("attributes", pa.table({"image_id": cols[0], "attribute": ["g"] * len(rows), "value": cols[2]}))
    for q in ("demographic_drop_rates", "quality_by_demographic"):
        out = audit.run_sql(con, audit.queries()[q].sql, {"z_crit": 3.0, "min_people": 5}).to_pylist()
        solo = [r for r in out if r["value"] == "X"]
        assert solo and all(not r["flagged"] and r["note"] == "too few people" and r["people"] == 1 for r in solo)
        assert not any(r["flagged"] for r in out), q


def _genderage_onnx(path):
    """[N,3,96,96] -> [N,3]: channel means (R, B) as female/male scores and G/255 as age/100."""
    w = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float32).T / np.array([1, 1, 255], np.float32)
    g = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input.1"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["out"])],
        "genderage", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 96, 96])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_attribute_model_on_stored_crops(run_copy, tmp_path):
    model = _genderage_onnx(str(tmp_path / "genderage.onnx"))
    r = cli("attributes", run_copy, "--model", model)
    assert r.exit_code == 0, r.output
    con = audit.connect(run_copy)
    faces = con.execute("SELECT count(*) FROM images WHERE crop IS NOT NULL").fetchone()[0]
    got = dict(con.execute("SELECT attribute, count(*) FROM attributes GROUP BY 1").fetchall())
    assert got == {"gender": faces, "age_group": faces}
    src = con.execute("SELECT DISTINCT source FROM attributes").fetchall()
    assert src == [(f"genderage.onnx@{file_sha256(model)[:12]}",)]
    ages = con.execute("SELECT min(number), max(number) FROM attributes WHERE attribute = 'age_group'").fetchone()
    assert 0 <= ages[0] <= ages[1] <= 100  # G mean / 255 * 100
    assert audit.run_query(con, audit.queries()["demographic_balance"]).num_rows >= 2


def test_sql_like_duckdbs_cli(scored_run, tmp_path):
    """SQL from a file, from standard input, several statements, PIVOT, without --write."""
    f = tmp_path / "q.sql"
    f.write_text("SELECT count(*) AS n_images FROM images;\nSELECT 2 AS two;\n")
    r = cli("sql", scored_run, "-f", f)
    assert r.exit_code == 0, r.output
    assert "n_images" in r.output and "two" in r.output
    r = CliRunner().invoke(main, ["sql", scored_run, "-"], input="SELECT 42 AS answer")
    assert r.exit_code == 0 and "answer" in r.output and "42" in r.output, r.output
    r = cli("sql", scored_run, "PIVOT (SELECT reason, 1 AS one FROM images) ON reason USING sum(one)")
    assert r.exit_code == 0 and "ok" in r.output.splitlines()[0], r.output


def test_sql_prompt_keeps_going_after_an_error(scored_run):
    r = CliRunner().invoke(main, ["sql", scored_run, "-i"],
                           input="SELECT 7 AS seven;\nSELEC oops;\nSELECT\n  8 AS eight;\n.quit\n")
    assert r.exit_code == 0, r.output
    assert "seven" in r.output and "error: SQL" in r.output and "eight" in r.output


def test_sql_cells_are_whole_and_tables_from_write_stay_visible(run_copy):
    r = cli("sql", run_copy, "SELECT repeat('x', 100) AS long, crop FROM images LIMIT 1")
    assert r.exit_code == 0 and "x" * 100 in r.output and "bytes>" in r.output, r.output
    r = cli("sql", run_copy, "SELECT repeat('x', 100) AS long", "--max-width", "10")
    assert "x" * 11 not in r.output and "..." in r.output
    assert cli("sql", run_copy, "CREATE TABLE notes AS SELECT 'checked' AS v", "--write").exit_code == 0
    r = cli("sql", run_copy, "SELECT v FROM notes")  # read-only, later: the table is there
    assert r.exit_code == 0 and "checked" in r.output, r.output


def test_a_moved_run_keeps_working(run_copy, tmp_path):
    before = cli("sql", run_copy, "SELECT count(*) AS n, sum(keep::int) AS kept FROM curated").output
    moved = tmp_path / "elsewhere"
    shutil.move(run_copy, moved)
    r = cli("sql", moved, "SELECT count(*) AS n, sum(keep::int) AS kept FROM curated")
    assert r.exit_code == 0 and r.output == before, r.output


def test_drop_rates_by_group_and_reason_flag_the_group_dropped_more():
    """Group B loses 20% to unidentifiable, the others 5%; far_from_dominant hits all alike: only
    (B, unidentifiable) and (B, any) are flagged, and the interval brackets the rate."""
    import duckdb

    rng = np.random.default_rng(0)
    rows = []
    for g, p_unid in (("A", 0.05), ("B", 0.2), ("C", 0.05)):
        for i in range(500):
            u = rng.random()
            reason = "unidentifiable" if u < p_unid else "far_from_dominant" if u < p_unid + 0.05 else "ok"
            rows.append((f"{g}{i}", g, reason))
    con = duckdb.connect()
    con.register("scores", pa.table({"image_id": [r[0] for r in rows], "identity": [r[0] for r in rows],
                                     "keep": [r[2] == "ok" for r in rows], "reason": [r[2] for r in rows]}))
    con.register("attributes", pa.table({"image_id": [r[0] for r in rows], "attribute": ["group"] * len(rows),
                                         "value": [r[1] for r in rows]}))
    out = audit.run_sql(con, audit.queries()["demographic_drop_rates"].sql, {"z_crit": 3.0, "min_people": 5}).to_pylist()
    flagged = {(r["value"], r["reason"]) for r in out if r["flagged"]}
    assert flagged == {("B", "unidentifiable"), ("B", "any")}
    b = next(r for r in out if (r["value"], r["reason"]) == ("B", "unidentifiable"))
    k = sum(1 for r in rows if r[1] == "B" and r[2] == "unidentifiable")
    assert b["dropped"] == k and b["pct_dropped"] == pytest.approx(100 * k / 500, abs=0.01)
    assert b["pct_lo"] < b["pct_dropped_per_person"] < b["pct_hi"] and b["people"] == 500
    unid = lambda inside: [float(r[2] == "unidentifiable") for r in rows if (r[1] == "B") == inside]  # noqa: E731
    assert b["z"] == pytest.approx(_welch(unid(True), unid(False)), abs=0.01)


def test_binary_cells_are_base64_in_csv_and_json():
    import base64
    import json

    import pyarrow as pa

    from curate.audit import to_text

    t = pa.table({"id": ["a"], "crop": [b"\xff\xd8\x00"], "faces": [[b"\x01"]]})
    want = base64.b64encode(b"\xff\xd8\x00").decode()
    assert to_text(t, "csv").splitlines()[1].startswith(f"a,{want},")
    assert json.loads(to_text(t, "json")) == [{"id": "a", "crop": want, "faces": ["AQ=="]}]


def test_a_scoring_from_an_earlier_release_asks_to_be_scored_again(scored_run, tmp_path):
    """A question that needs a column an older scoring lacks says to run `curate score OUT`."""
    import shutil

    import pyarrow.parquet as pq
    import pytest

    from curate import audit
    from curate.errors import InputError
    from curate.io.shards import ShardStore

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    store = ShardStore.of(str(run))
    f = store.scores_file(store.current_scoring())
    pq.write_table(pq.read_table(f).drop_columns(["near_identical_of", "near_sim"]), f)
    with pytest.raises(InputError, match="curate score OUT"):
        audit.run_query(audit.connect(str(run)), audit.queries()["duplicate_clusters"])
