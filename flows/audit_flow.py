"""The ``audit`` Prefect flow: every sql/ question over a scored run -> result files, then the HTML
report. Runs after ``curate`` (as its last step) or on its own, e.g. after ``curate attributes``.

Results land in ``OUT/audit-<scores digest>/NAME.<format>``: one folder per threshold set, so
re-scoring never overwrites the audit of an earlier one. Questions whose source is missing (no
attributes yet) are listed with the reason, not failed.
"""

from __future__ import annotations

import os

from prefect import flow, task

from curate import audit as A
from curate.errors import InputError
from curate.io.shards import ShardStore


@task
def run_audits(store: ShardStore, fmt: str, sql_dir: str | None, scores: str | None = None) -> dict:
    digest = store.resolve_scoring(scores)
    if not digest:
        raise InputError(f"{store.out}: not scored yet (run `curate score {store.out}`)")
    dest = store.audit_dir(digest)
    os.makedirs(dest, exist_ok=True)
    con = A.connect(store, score_digest=digest)
    try:
        have = A.views(con)
        written, skipped = {}, {}
        for name, q in A.queries(sql_dir).items():
            msg = A.missing_message(q, have)
            if msg:
                skipped[name] = msg
                continue
            t = A.run_query(con, q)
            written[name] = {"rows": t.num_rows, "path": A.write_result(t, fmt, os.path.join(dest, name))}
    finally:
        con.close()
    return {"dir": dest, "digest": digest, "written": written, "skipped": skipped}


@task
def write_report(store: ShardStore, scores: str | None = None) -> str:
    from curate.report import build_report

    return build_report(store, scores=scores)


@flow(name="audit")
def audit_flow(out: str, fmt: str = "parquet", sql_dir: str | None = None, report: bool = True,
               scores: str | None = None) -> dict:
    store = ShardStore.of(out)  # the run's one handle, for every task
    result = run_audits(store, fmt, sql_dir, scores)
    if report:
        result["report"] = write_report(store, result["digest"])
    return result
