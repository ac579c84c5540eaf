"""The output directory: a persisted plan, idempotent shards, completion markers, DuckDB views.

Layout of ``OUT/``::

    run.json                              input, config and digest, shard count (written last at plan time)
    index.parquet                         the plan: one row per input item, one row group per shard
    images/part-000042-<digest>.parquet   one row per input image
    detections/part-000042-<digest>.parquet  one row per detected face
    _completions/part-000042-<digest>.json   marker, written after both files are in place
    curate.duckdb                         views over completed shards only
    recognizer.card.json                  the recognizer's model card as the run used it (calibration included)
    scoring.json                          the current scoring: digest (scores-, identities-, curated/ files),
                                          its thresholds and calibration card, so a rerun keeps it
    attributes/<source>.parquet           demographic attributes per image (curate attributes)

A shard's files are written under a temporary name and renamed; its marker is written last. A shard
without a marker is redone from scratch, so a killed run resumes with no duplicates and no gaps, and
readers (views built from markers) never see a partial shard.

Longer than 400 lines because it is the one place that names every file of a run directory (one
short method each, so no other module builds a path) and the views over them.
"""

from __future__ import annotations

import glob
import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import RunConfig
from curate.errors import InputError, OtherRun, OutputError
from curate.files import atomic_write, config_diff, write_json
from curate.io.sources import Source, source_from_description

KINDS = ("images", "detections")
MIN_SHARD = 64  # images: below this, a shard's fixed costs (files, marker, task) outweigh its work


class ShardStore:
    """The run directory's one handle: a flow opens it once (``ShardStore.of``) and passes it down
    to its tasks, and to Ray workers (it pickles as its path and manifest)."""

    @classmethod
    def of(cls, run: "str | ShardStore") -> "ShardStore":
        """``run`` itself when it is a handle already, else the run in that directory; a directory
        with no run is an error."""
        if isinstance(run, ShardStore):
            return run
        store = cls(run)
        if store.manifest is None:
            raise InputError(f"{run}: no run here (no run.json)")
        return store

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.manifest: dict | None = None
        p = self._path("run.json")
        if os.path.exists(p):
            with open(p) as f:
                self.manifest = json.load(f)

    # -- planning -------------------------------------------------------------------------
    def check(self, source: Source, cfg: RunConfig) -> dict | None:
        """Fail fast, before any work (well under a second): the input's shape, the run already in
        ``out`` (if any) must be this one, planned from an input laid out as this one is, and a new
        ``out`` must be creatable. Returns the existing manifest, or None for a new run."""
        if self.manifest is not None:
            m = self.manifest
            diffs = config_diff(m["config"], cfg.to_dict())
            if m["input"] != source.describe():
                diffs.insert(0, f"input: {source.describe()['path']} ({source.kind}) here, "
                                f"{m['input']['path']} ({m['input']['kind']}) in {self.out}")
            elif "layout" in m and m["layout"] != (now := source.layout()):
                diffs.insert(0, "the input was laid out differently when it was planned (" + ", ".join(
                    f"{k}: {now.get(k)} now, {v} then" for k, v in m["layout"].items() if now.get(k) != v)
                    + "): the plan is stale")
            if diffs:
                raise OtherRun(f"{self.out} holds another run ({'; '.join(diffs)}); use another --out, or the "
                                  "same settings to resume it")
            return m
        source.check()
        parent = self.out
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise OutputError(f"cannot create output directory {self.out}: {parent} is not a writable directory")
        return None

    def open_run(self, source: Source, cfg: RunConfig, workers: int = 1) -> dict:
        """Plan the run, or check that an existing one in ``out`` is the same run and resume it.
        Shards hold at most ``cfg.shard_size`` images, and fewer on a small crawl, so that each of
        ``workers`` gets about four shards: a 1,500-image crawl on 2 workers is 8 shards, not one
        shard on one worker while the other waits. The size is fixed in the plan (run.json), so a
        resume with another worker count redoes nothing."""
        existing = self.check(source, cfg)
        if existing is not None:
            return existing
        index = source.plan()
        if len(index) == 0:
            raise InputError(f"nothing to curate: {source.empty_message()}")
        try:
            os.makedirs(self.out, exist_ok=True)
            for d in (*KINDS, "_completions"):
                os.makedirs(os.path.join(self.out, d), exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {self.out}: {exc.strerror}") from exc
        if not os.access(self.out, os.W_OK):
            raise OutputError(f"output directory {self.out} is not writable")
        n = len(index)
        size = min(cfg.shard_size, max(MIN_SHARD, -(-n // (4 * max(workers, 1)))))
        atomic_write(self.index_file(), lambda tmp: pq.write_table(index, tmp, row_group_size=size))
        self.manifest = {
            "input": source.describe(),
            "config": cfg.to_dict(),
            "digest": cfg.digest(),
            "items": n,
            "shard_size": size,
            "shards": (n + size - 1) // size,
            "layout": source.layout(),
            "empty_identities": len(source.empty_identities),
        }
        write_json(self._path("run.json"), self.manifest)
        return self.manifest

    def source(self) -> Source:
        return source_from_description(self.manifest["input"])

    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.manifest["config"])

    def shard_index(self, shard: int) -> pa.Table:
        """The plan rows of one shard (one Parquet row group: never the whole plan in memory)."""
        return pq.ParquetFile(self.index_file()).read_row_group(shard)

    # -- shards ---------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def _name(self, shard: int) -> str:
        return f"part-{shard:06d}-{self.manifest['digest']}"

    def marker_path(self, shard: int) -> str:
        return self._path("_completions", self._name(shard) + ".json")

    def shard_path(self, kind: str, shard: int) -> str:
        return self._path(kind, self._name(shard) + ".parquet")

    def is_complete(self, shard: int) -> bool:
        return os.path.exists(self.marker_path(shard))

    def pending(self) -> list[int]:
        return [s for s in range(self.manifest["shards"]) if not self.is_complete(s)]

    def commit(self, shard: int, images: pa.Table, detections: pa.Table, extra: dict | None = None) -> dict:
        expected = len(self.shard_index(shard))
        if len(images) != expected:  # the invariant that makes "nothing is lost" checkable
            raise AssertionError(f"shard {shard}: {len(images)} image rows for {expected} planned items")
        t0 = time.perf_counter()
        for kind, table in (("images", images), ("detections", detections)):
            atomic_write(self.shard_path(kind, shard), lambda tmp, t=table: pq.write_table(t, tmp))
        extra = dict(extra or {})
        if "seconds" in extra:
            extra["seconds"] = {**extra["seconds"], "write": time.perf_counter() - t0}
        reasons = images.group_by("reason").aggregate([("reason", "count")]).to_pylist()
        marker = {
            "shard": shard,
            "digest": self.manifest["digest"],
            "images": len(images),
            "faces": len(detections),
            "kept": int(pa.compute.sum(images["keep"]).as_py() or 0),
            "reasons": {r["reason"]: r["reason_count"] for r in reasons},
            **extra,
        }
        write_json(self.marker_path(shard), marker)
        return marker

    def marker(self, shard: int) -> dict:
        with open(self.marker_path(shard)) as f:
            return json.load(f)

    def markers(self) -> list[dict]:
        return [self.marker(s) for s in range(self.manifest["shards"]) if self.is_complete(s)]

    def summary(self) -> dict:
        """What the run did so far, from the markers (and identity counts from the shards)."""
        markers = self.markers()
        reasons: dict[str, int] = {}
        seconds: dict[str, float] = {}
        for m in markers:
            for k, v in m["reasons"].items():
                reasons[k] = reasons.get(k, 0) + v
            for k, v in m.get("seconds", {}).items():
                seconds[k] = seconds.get(k, 0.0) + v
        images = sum(m["images"] for m in markers)
        kept = sum(m["kept"] for m in markers)
        out = {
            "out": self.out,
            "input": self.manifest["input"]["path"],
            "digest": self.manifest["digest"],
            "items_planned": self.manifest["items"],
            "shards": self.manifest["shards"],
            "shards_done": len(markers),
            "images": images,
            "faces": sum(m["faces"] for m in markers),
            "kept": kept,
            "rejected": images - kept,
            "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "empty_identity_folders": self.manifest.get("empty_identities", 0),
            "worker_seconds": {k: round(v, 2) for k, v in seconds.items()},
        }
        files = self.completed_files("images")
        if files:
            import duckdb

            con = duckdb.connect()
            try:
                row = con.execute(
                    "SELECT count(DISTINCT identity), count(DISTINCT identity) FILTER (WHERE keep) "
                    "FROM read_parquet($files)", {"files": files}
                ).fetchone()
            finally:
                con.close()
            out["identities"], out["identities_kept"] = row
        digest = self.current_scoring()
        if digest and os.path.exists(self.summary_file(digest)):
            with open(self.summary_file(digest)) as f:
                out["curation"] = json.load(f)  # thresholds, their source and warnings included
        return out

    def remove_stale_temp_files(self) -> int:
        """Remove ``.*.tmp`` files a killed run left behind; call only when no writer is active."""
        n = 0
        for d in (*KINDS, "_completions", "scores", "curated", "attributes", "."):
            for p in glob.glob(self._path(d, ".*.tmp")):
                try:
                    os.remove(p)
                    n += 1
                except OSError:
                    pass
        return n

    def completed_files(self, kind: str) -> list[str]:
        return [self.shard_path(kind, s) for s in range(self.manifest["shards"]) if self.is_complete(s)]

    # -- every file name under a run directory is formatted here ---------------------------
    # (a scoring's files carry its digest <d>; the spine's its config digest, in _name)
    def index_file(self) -> str:
        return self._path("index.parquet")

    def views_db(self) -> str:
        return self._path("curate.duckdb")

    def recognizer_card_file(self) -> str:
        return self._path("recognizer.card.json")

    def scoring_file(self) -> str:
        return self._path("scoring.json")

    def scores_file(self, d: str) -> str:
        return self._path("scores", f"scores-{d}.parquet")

    def identities_file(self, d: str) -> str:
        return self._path(f"identities-{d}.parquet")

    def group_faces_file(self, d: str) -> str:
        """Every face of the scoring's group photos: picked or other, its nearest identity."""
        return self._path(f"group-faces-{d}.parquet")

    def calibration_file(self, d: str) -> str:
        return self._path(f"calibration-{d}.json")

    def summary_file(self, d: str) -> str:
        return self._path(f"summary-{d}.json")

    def curated_file(self, shard: int | str, d: str) -> str:
        """A curated shard (``shard="*"``: the glob of a scoring's curated shards)."""
        return self._path("curated", f"part-{shard if isinstance(shard, str) else f'{shard:06d}'}-{d}.parquet")

    def audit_dir(self, d: str) -> str:
        return self._path(f"audit-{d}")

    def report_file(self, d: str) -> str:
        return self._path(f"report-{d}.html")

    def review_page(self, d: str) -> str:
        return self._path(f"review-{d}.html")

    def scoring_work(self, d: str) -> str:
        return self._path("_scoring", d)

    def reviews_file(self) -> str:
        return self._path("reviews.parquet")

    def leakage_dir(self) -> str:
        return self._path("leakage")

    def attributes_dir(self) -> str:
        return self._path("attributes")

    def logs_dir(self) -> str:
        return self._path("logs")

    def lock_file(self) -> str:
        return self._path(".lock")

    def truth_file(self) -> str:
        return self._path("truth.parquet")

    def bench_dir(self) -> str:
        return self._path("bench")

    def loop_file(self) -> str:
        return self._path("loop.json")

    # -- views ----------------------------------------------------------------------------

    @staticmethod
    def _json(p: str) -> dict | None:
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    def scoring(self) -> dict | None:
        """The current scoring (``scoring.json``: digest, config, calibration card), or None."""
        return self._json(self.scoring_file())

    def current_scoring(self) -> str | None:
        """Digest of the current scoring, or None before any."""
        s = self.scoring()
        return s["digest"] if s else None

    def set_current_scoring(self, digest: str, config: dict | None = None, calibration: str | None = None) -> None:
        write_json(self.scoring_file(), {"digest": digest, "config": config, "calibration": calibration})

    def scorings(self) -> list[str]:
        """Digests of every scoring written into this run, oldest first."""
        files = glob.glob(self.scores_file("*"))
        return [os.path.basename(f)[7:-8] for f in sorted(files, key=os.path.getmtime)]

    def resolve_scoring(self, digest: str | None) -> str | None:
        """A scoring digest (or a unique prefix of one) -> the full digest; None -> the current one."""
        if digest is None:
            return self.current_scoring()
        found = [d for d in self.scorings() if d.startswith(digest)]
        if len(found) != 1:
            have = ", ".join(self.scorings()) or "none"
            raise OutputError(f"{self.out}: no single scoring {digest!r} (scorings here: {have})")
        return found[0]

    def record_recognizer(self, recognizer, detector=None) -> None:
        """Keep the recognizer's card (with its calibrations) beside the run it embedded, and the
        detector whose landmarks aligned the crops (it picks the calibration)."""
        card = {k: v for k, v in getattr(recognizer, "card", {}).items() if not k.startswith("_")}
        write_json(self.recognizer_card_file(), {
            **card, "model_id": recognizer.id, "model_sha256": getattr(recognizer, "sha256", None),
            "detector_id": getattr(detector, "id", None)})

    def recognizer_card(self) -> dict | None:
        return self._json(self.recognizer_card_file())

    def recognizer_id(self) -> str | None:
        return (self.recognizer_card() or {}).get("model_id")

    def view_files(self, score_digest: str | None = None) -> dict[str, list[str]]:
        """View name -> Parquet files: completed shards only; scores, identities and curated shards of
        ``score_digest`` (default: the current scoring); attributes from every attribute source."""
        views = {"plan": [self.index_file()], **{k: self.completed_files(k) for k in KINDS}}
        digest = score_digest or self.current_scoring()
        if digest:
            views["scores"] = [self.scores_file(digest)]
            views["identities"] = [self.identities_file(digest)]
            views["group_faces"] = [self.group_faces_file(digest)]
            views["curated"] = sorted(glob.glob(self.curated_file("*", digest)))
        views["attributes"] = sorted(glob.glob(os.path.join(self.attributes_dir(), "*.parquet")))
        return {k: [f for f in v if os.path.exists(f)] for k, v in views.items()}

    def create_views(self, con, score_digest: str | None = None) -> list[str]:
        """CREATE VIEW over the Parquet files in ``con`` (no data copied), and the ``reasons``
        table (curate.reasons: every reason, its stage, label noise or not, meaning and rule);
        returns the view names."""
        from curate import reasons

        con.register("_reasons", reasons.table())
        con.execute("CREATE OR REPLACE TABLE reasons AS SELECT * FROM _reasons")
        con.unregister("_reasons")
        names = []
        for name, files in self.view_files(score_digest).items():
            if files:
                lst = "[" + ", ".join(sql_literal(f) for f in files) + "]"
                # attribute sources differ in columns; shards of a run resumed across a release that added a
                # column (images.resolved_path) do too
                union = ", union_by_name = true" if name in ("attributes", "images", "curated") else ""
                con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({lst}{union})")
                names.append(name)
        return names

    def write_views(self, score_digest: str | None = None) -> str:
        """(Re)create ``curate.duckdb`` with the views, for users who open it with DuckDB directly."""
        import duckdb

        db = self.views_db()
        try:
            con = duckdb.connect(db)
        except duckdb.IOException as exc:  # open in someone's DuckDB shell: the views stay as they were
            import logging

            logging.getLogger(__name__).warning("%s is open in another program (%s): its views were not refreshed; "
                                                "`curate sql` always sees the current files", db, str(exc).splitlines()[0])
            return db
        try:
            self.create_views(con, score_digest)
        finally:
            con.close()
        return db


def sql_literal(s: str) -> str:
    """A SQL string literal. DuckDB cannot bind parameters inside view definitions (DDL), so paths are
    quoted here; they come from our own directory listing, and quotes are doubled."""
    return "'" + s.replace("'", "''") + "'"
