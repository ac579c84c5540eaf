"""Review overrides: a person's decisions on top of the automatic ones.

``OUT/reviews.parquet`` holds every decision ever imported (``REVIEWS``: scope ``image`` or
``identity``, the image_id or identity, action ``keep`` / ``reject`` / ``relabel`` with the new
label in ``value``, who, when, a note). A face's relabel ("this face is X") also keeps it, under X.
The review page downloads, and ``curate review import`` reads, a JSON list of such objects:

    [{"scope": "image", "key": "<image_id>", "action": "relabel", "value": "Tony_Blair",
      "reviewer": "ann", "at": "2026-12-06T10:00:00Z", "note": "the label of a swap"}]

(a CSV with those column names works too; ``at`` defaults to the import time, ``reviewer`` to
``--reviewer``). ``curate review import`` appends to it; ``curate score``
applies the latest decision per image and per identity (an image's own decision wins over its
identity's) with ``apply``: ``keep`` and ``reason`` become the reviewer's (``review_keep``,
``review_reject``), the automatic ones stay in ``auto_keep`` and ``auto_reason``, ``review`` says
who decided what and when, and ``label`` is the identity a face is exported under.
"""

from __future__ import annotations

import csv
import datetime
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.files import atomic_write
from curate.io.shards import ShardStore
from curate.reasons import with_is_columns

REVIEWS = pa.schema([("scope", pa.string()), ("key", pa.string()), ("action", pa.string()), ("value", pa.string()),
                     ("reviewer", pa.string()), ("at", pa.string()), ("note", pa.string())])
ACTIONS = {"image": ("keep", "reject", "relabel"), "identity": ("keep", "reject", "relabel")}


def path(run: str) -> str:
    return ShardStore.of(run).reviews_file()


def read(run: str) -> pa.Table:
    p = path(run)
    return pq.read_table(p) if os.path.exists(p) else REVIEWS.empty_table()


def parse(file: str, reviewer: str | None = None) -> list[dict]:
    """Decisions from a JSON list (the review page's download) or a CSV with a header."""
    try:
        with open(file, encoding="utf-8") as f:
            rows = json.load(f) if file.endswith(".json") else list(csv.DictReader(f))
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: cannot read reviews ({exc})") from exc
    if not isinstance(rows, list):
        raise InputError(f"{file}: expected a list of decisions")
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise InputError(f"{file}: decision {n} is not an object")
        d = {k: (None if r.get(k) in (None, "") else str(r.get(k))) for k in REVIEWS.names}
        d["reviewer"] = d["reviewer"] or reviewer
        d["at"] = d["at"] or now
        if d["scope"] not in ACTIONS or d["action"] not in ACTIONS[d["scope"]]:
            raise InputError(f"{file}: decision {n}: scope/action {d['scope']!r}/{d['action']!r}; allowed "
                             + "; ".join(f"{s}: {', '.join(a)}" for s, a in ACTIONS.items()))
        if not d["key"]:
            raise InputError(f"{file}: decision {n} names no image_id or identity (key)")
        if d["action"] == "relabel" and not d["value"]:
            raise InputError(f"{file}: decision {n}: relabel needs the new label in value")
        if not d["reviewer"]:
            raise InputError(f"{file}: decision {n} says nobody decided it; pass --reviewer NAME")
        out.append(d)
    return out


def import_file(run: str, file: str, reviewer: str | None = None) -> dict:
    """Append the decisions in ``file`` (checked against the run) to OUT/reviews.parquet."""
    store = ShardStore.of(run)
    rows = parse(file, reviewer)
    t = pq.ParquetDataset(store.completed_files("images")).read(columns=["image_id", "identity"])
    images, identities = set(t["image_id"].to_pylist()), set(t["identity"].drop_null().to_pylist())
    unknown = [r["key"] for r in rows if r["key"] not in (images if r["scope"] == "image" else identities)]
    if unknown:
        raise InputError(f"{file}: {len(unknown)} decisions name no {('image or identity')} of this run (e.g. {unknown[0]!r})")
    old = read(run)
    seen = {tuple(r.values()) for r in old.to_pylist()}
    new = [r for r in rows if tuple(r[k] for k in REVIEWS.names) not in seen]
    table = pa.concat_tables([old, pa.Table.from_pylist(new, schema=REVIEWS)])
    atomic_write(path(run), lambda tmp: pq.write_table(table, tmp))
    return {"imported": len(new), "already_there": len(rows) - len(new), "total": len(table)}


def digest_part(run: str) -> list:
    """What of the reviews a scoring depends on (for its digest)."""
    return sorted(tuple(r.values()) for r in read(run).to_pylist())


def apply(scores: pa.Table, reviews: pa.Table) -> pa.Table:
    """The scores with the latest review decisions on top (module doc). Pure."""
    n = len(scores)
    auto_label = scores["label"] if "label" in scores.column_names else scores["identity"]  # a merge's, else the crawl's
    base = scores.drop_columns([c for c in ("auto_keep", "auto_reason", "review", "label") if c in scores.column_names])
    if not len(reviews):  # the usual case, and a hot path at 10M rows: no Python over the rows
        return (base.append_column("auto_keep", base["keep"]).append_column("auto_reason", base["reason"])
                .append_column("review", pa.nulls(n, pa.string())).append_column("label", auto_label))
    keep = np.asarray(scores["keep"].to_numpy(zero_copy_only=False), bool).copy()
    reason = np.array(scores["reason"].to_pylist(), object)
    spine = np.array(scores["spine_reason"].to_pylist(), object)
    label = np.array(auto_label.to_pylist(), object)
    note = np.full(n, None, object)
    latest: dict[tuple[str, str], dict] = {}
    for r in sorted(reviews.to_pylist(), key=lambda r: r["at"] or ""):
        latest[(r["scope"], r["key"])] = r
    by_identity = {k: r for (s, k), r in latest.items() if s == "identity"}
    by_image = {k: r for (s, k), r in latest.items() if s == "image"}
    ids, ident = scores["image_id"], scores["identity"]
    touched = pc.or_(pc.is_in(ident, pa.array(list(by_identity), pa.string())),  # only reviewed rows are visited
                     pc.is_in(ids, pa.array(list(by_image), pa.string())))
    rows = np.flatnonzero(np.asarray(pc.fill_null(touched, False).to_numpy(zero_copy_only=False), bool))
    ids, ident = ids.take(pa.array(rows)).to_pylist(), ident.take(pa.array(rows)).to_pylist()
    for j, i in enumerate(rows):
        for r in (by_identity.get(ident[j]), by_image.get(ids[j])):  # the image's own decision last: it wins
            if r is None:
                continue
            if r["action"] == "relabel":
                label[i] = r["value"]
                if r["scope"] == "image" and spine[i] == "ok":  # "this face is X": a good face, under X
                    keep[i], reason[i] = True, "review_keep"
            elif spine[i] == "ok" or r["action"] == "reject":  # a face that is not there cannot be kept
                keep[i] = r["action"] == "keep"
                reason[i] = f"review_{r['action']}"
            note[i] = f"{r['action']}{' to ' + r['value'] if r['value'] else ''} by {r['reviewer']} at {r['at']}" + (
                f": {r['note']}" if r["note"] else "")
    out = (base.append_column("auto_keep", scores["keep"]).append_column("auto_reason", scores["reason"])
           .set_column(base.schema.get_field_index("keep"), "keep", pa.array(keep))
           .set_column(base.schema.get_field_index("reason"), "reason", pa.array(reason.tolist(), pa.string()))
           .append_column("review", pa.array(note.tolist(), pa.string()))
           .append_column("label", pa.array(label.tolist(), pa.string())))
    return with_is_columns(out) if "is_review_keep" in out.column_names else out  # the flags follow the reason


def overrides(scores: pa.Table) -> int:
    return int(pc.sum(pc.is_valid(scores["review"])).as_py() or 0) if "review" in scores.column_names else 0
