"""A new user's bad days, each a test: a crawl with no face, layouts that go wrong (flat folder,
tar made from inside or outside the crawl, empty identity folders, a crawl re-laid out after
planning), bad options and audit parameters, two commands on one run directory, Ctrl-C, and an
unexpected error. Each ends in one clear line, a recorded reason, or a warning; none in a
traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from curate.cli import main
from curate.io.lock import holder, run_lock
from curate.io.shards import ShardStore

ROOT = Path(__file__).resolve().parents[1]
CURATE = os.path.join(os.path.dirname(sys.executable), "curate")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def noise_jpeg(path: Path, seed: int = 0, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


def fast(*args, limit: float = 1.0):
    """The command, which must fail before any work: (result, seconds)."""
    t0 = time.perf_counter()
    r = cli(*args)
    return r, time.perf_counter() - t0


# -- layouts -----------------------------------------------------------------------------------


def test_layout_mistakes_fail_at_once_with_the_fix(tmp_path):
    cli("run", tmp_path, "--out", tmp_path / "warm", "--dry-run")  # models' modules imported once
    flat = tmp_path / "flat"
    for k in range(3):
        noise_jpeg(flat / f"{k}.jpg", k)
    for extra in ((), ("--dry-run",)):
        r, s = fast("run", flat, "--out", tmp_path / "o1", *extra)
        assert r.exit_code == 3 and "no identity folders" in r.output and "<identity>/<image>" in r.output, r.output
        assert s < 1.0 and not (tmp_path / "o1").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r, s = fast("run", empty, "--out", tmp_path / "o2")
    assert r.exit_code == 3 and "nothing to curate" in r.output and s < 1.0
    bad_rec = tmp_path / "bad.rec"
    bad_rec.write_bytes(b"\x00" * 64)
    (tmp_path / "bad.idx").write_text("1\t0\n")
    r, s = fast("run", bad_rec, "--out", tmp_path / "o3")
    assert r.exit_code == 3 and "not a readable RecordIO file" in r.output and s < 1.0, r.output
    (tmp_path / "file").write_text("x")
    r, s = fast("run", flat.parent / "flat", "--out", tmp_path / "file" / "out")
    assert r.exit_code in (3, 7) and s < 1.0
    crawl = tmp_path / "crawl"
    noise_jpeg(crawl / "a" / "1.jpg")
    r, s = fast("run", crawl, "--out", tmp_path / "file" / "out")
    assert r.exit_code == 7 and "cannot create output directory" in r.output and s < 1.0


def test_tar_from_inside_is_read_and_from_outside_warns(tmp_path):
    crawl = tmp_path / "crawl"
    for person in ("Ann", "Bob"):
        for k in range(2):
            noise_jpeg(crawl / person / f"{k}.jpg", k)
    inside = tmp_path / "inside.tar"
    with tarfile.open(inside, "w") as t:  # tar -C crawl -cf inside.tar .
        t.add(crawl, arcname=".")
    from curate.io.sources import open_source

    index = open_source(str(inside)).plan()
    assert sorted(set(index["identity"].to_pylist())) == ["Ann", "Bob"]  # not '.'
    many = tmp_path / "many" / "crawl"
    for k in range(60):
        (many / f"p{k % 30}").mkdir(parents=True, exist_ok=True)
        (many / f"p{k % 30}" / f"{k}.jpg").write_bytes(b"x")
    outside = tmp_path / "outside.tar"
    with tarfile.open(outside, "w") as t:  # tar -cf outside.tar crawl: one identity, 'crawl'
        t.add(many, arcname="crawl")
    r = cli("run", outside, "--out", tmp_path / "o", "--dry-run", "--no-progress")
    assert "WARNING" in r.output and "'crawl' holds 60 of the 60 images" in r.output, r.output


def test_empty_identity_folders_are_counted(tmp_path):
    crawl = tmp_path / "crawl"
    noise_jpeg(crawl / "a" / "1.jpg")
    (crawl / "nobody").mkdir()
    r = cli("run", crawl, "--out", tmp_path / "o", "--dry-run", "--no-progress")
    assert "1 identity folders hold no file" in r.output, r.output
    from curate.config import RunConfig
    from curate.io.sources import open_source

    store = ShardStore(str(tmp_path / "o"))
    store.open_run(open_source(str(crawl)), RunConfig())
    assert store.summary()["empty_identity_folders"] == 1


def test_a_plan_from_another_layout_is_refused_on_rerun(tmp_path):
    from curate.config import RunConfig
    from curate.io.sources import open_source

    crawl = tmp_path / "crawl"
    noise_jpeg(crawl / "a" / "1.jpg")
    noise_jpeg(crawl / "loose.jpg", 1)
    ShardStore(str(tmp_path / "o")).open_run(open_source(str(crawl)), RunConfig())
    (crawl / "b").mkdir()
    os.replace(crawl / "loose.jpg", crawl / "b" / "loose.jpg")  # the user fixes the layout
    r = cli("run", crawl, "--out", tmp_path / "o", "--dry-run")
    assert r.exit_code == 9 and "laid out differently" in r.output and "identity folders: 2 now, 1 then" in r.output


# -- options -------------------------------------------------------------------------------------


def test_a_dry_run_refuses_what_the_real_run_refuses(tmp_path):
    crawl = tmp_path / "crawl"
    noise_jpeg(crawl / "a" / "1.jpg")
    for opt in (("--workers", "-1"), ("--far-angle", "-5"), ("--batch-size", "0"), ("--det-size", "100"),
                ("--identity-col", "2")):  # the last: an option of another kind of input
        for extra in ((), ("--dry-run",)):
            r = cli("run", crawl, "--out", tmp_path / "o", *opt, *extra)
            assert r.exit_code == 2 and "Traceback" not in r.output, (opt, extra, r.output)
            assert not (tmp_path / "o").exists()


def test_audit_parameters_are_typed_and_range_checked(scored_run):
    for q, p in (("far_angle_sweep", "step=0"), ("quality_histogram", "bins=0"), ("quality_histogram", "bins=x")):
        r = cli("audit", scored_run, "-q", q, "-p", p)
        assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1, r.output
    r = cli("audit", scored_run, "-q", "quality_histogram", "-p", "bins=5")
    assert r.exit_code == 0 and "-inf" not in r.output


# -- one writer per run directory ----------------------------------------------------------------


def _hold_lock(out) -> subprocess.Popen:
    code = ("import sys, time\nfrom curate.io.lock import run_lock\n"
            "with run_lock(sys.argv[1], 'curate score OUT --far-angle 60'):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_and_readers_never_wait(scored_run):
    before = ShardStore.of(scored_run).scoring()
    p = _hold_lock(scored_run)
    try:
        for args in (("score", scored_run, "--far-angle", "85"), ("review", "import", scored_run, __file__),
                     ("sql", scored_run, "--write", "SELECT 1")):
            r = cli(*args)
            assert r.exit_code == 8, (args, r.output)
            assert f"another curate (pid {p.pid}" in r.output and "--far-angle 60" in r.output
        assert cli("status", scored_run).exit_code == 0  # readers never block
        assert cli("sql", scored_run, "SELECT count(*) FROM scores").exit_code == 0
        assert ShardStore.of(scored_run).scoring() == before
    finally:
        p.kill()
        p.wait()
    assert holder(scored_run)["pid"] == p.pid  # the killed holder's lock is stale: the next writer takes it
    with run_lock(scored_run):
        assert holder(scored_run)["pid"] == os.getpid()
    assert not os.path.exists(ShardStore(scored_run).lock_file())


def test_scoring_json_names_only_a_complete_scoring(scored_run, monkeypatch):
    from curate import scoring as C
    from curate.config import ScoreConfig

    before = ShardStore.of(scored_run).scoring()
    real = C.write_json

    def die_on_summary(path, obj):
        if os.path.basename(path).startswith("summary-"):
            raise KeyboardInterrupt("killed before the summary")
        return real(path, obj)

    monkeypatch.setattr(C, "write_json", die_on_summary)
    with pytest.raises(KeyboardInterrupt):
        C.score_run(scored_run, ScoreConfig(far_angle=61.0))
    assert ShardStore.of(scored_run).scoring() == before  # still the complete one
    assert not os.path.exists(ShardStore(scored_run).lock_file())


# -- one line for the unexpected ---------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_a_log_file(scored_run, monkeypatch):
    from curate import partitioned as P

    def boom(*a, **k):
        raise RuntimeError("the disk said no\nsecond line")

    monkeypatch.setattr(P, "plan_work", boom)
    r = cli("score", scored_run, "--far-angle", "62")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert "unexpected failure in" in lines[0] and "RuntimeError: the disk said no" in lines[0]
    log = lines[0].split("full traceback: ")[1].rstrip(")")
    assert log.startswith(os.path.join(scored_run, "logs")) and "Traceback" in open(log).read()


# -- whole runs, as a user starts them -----------------------------------------------------------


def _curate(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([CURATE, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=ROOT, **kw)


@pytest.mark.slow
def test_a_crawl_with_no_face_runs_to_the_end(tmp_path):
    for k in range(6):
        noise_jpeg(tmp_path / "crawl" / "ab"[k % 2] / f"{k}.jpg", k, 120)
    (tmp_path / "crawl" / "c").mkdir()
    (tmp_path / "crawl" / "c" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    p = _curate("run", tmp_path / "crawl", "--out", tmp_path / "out", "--no-progress")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0 and "Traceback" not in out, out
    assert "curation     0 of 7 images kept" in out
    s = ShardStore.of(str(tmp_path / "out"))
    scores = pq.read_table(s.scores_file(s.current_scoring()))
    assert sorted(scores["reason"].to_pylist()) == ["decode_error"] + ["no_face"] * 6
    assert os.path.exists(s.report_file(s.current_scoring()))


@pytest.mark.slow
def test_a_second_run_is_refused_ctrl_c_exits_at_once_and_the_rerun_resumes(tmp_path, sample_crawl):
    out = tmp_path / "out"
    p = _curate("run", sample_crawl, "--out", out, "--shard-size", "8", "--workers", "1", "--no-audit", "--engine", "flow")
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(ShardStore(str(out)).lock_file()):
        time.sleep(0.05)
    r = cli("run", sample_crawl, "--out", out, "--shard-size", "8", "--workers", "1", "--no-audit", "--engine", "flow")
    assert r.exit_code == 8 and "another curate" in r.output, r.output  # two runs into one OUT: the second waits for none
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "_completions").glob("*.json")) if (out / "_completions").exists() \
            else time.time() < deadline:
        time.sleep(0.2)
    assert list((out / "_completions").glob("*.json")), "no shard landed"
    t0 = time.perf_counter()
    os.killpg(p.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole foreground group
    text, _ = p.communicate(timeout=30)
    took = time.perf_counter() - t0
    assert took < 5 and p.returncode == 130, (took, text)
    assert text.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in text and "Error" not in text, text
    assert not os.path.exists(ShardStore(str(out)).lock_file())
    time.sleep(1)
    assert not [x for x in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if str(out) in x]  # nothing of it left running
    r = _curate("run", sample_crawl, "--out", out, "--shard-size", "8", "--workers", "1", "--no-audit", "--engine", "flow",
                "--json")
    text, _ = r.communicate(timeout=300)
    assert r.returncode == 0, text
    summary = json.loads(text[text.index("{"):])
    assert summary["images"] == summary["items_planned"] and summary["shards_done"] == summary["shards"]
    images = ShardStore.of(str(out)).completed_files("images")
    items = [i for f in images for i in pq.read_table(f, columns=["item"])["item"].to_pylist()]
    assert sorted(items) == list(range(summary["items_planned"]))  # no gap, no duplicate


def test_scoring_again_keeps_the_thresholds_it_was_given(scored_run, tmp_path):
    """`curate score OUT` with no scoring option (the README's step after `review import`) keeps the
    current scoring's thresholds instead of reverting to the card's."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    assert cli("score", run, "--far-angle", "70").exit_code == 0
    r = cli("score", run)
    assert r.exit_code == 0 and "the thresholds of the current scoring" in r.output, r.output
    assert "far angle 70.0 deg (config)" in r.output
    assert ShardStore.of(str(run)).scoring()["config"]["far_angle"] == 70.0
