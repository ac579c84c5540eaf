"""The ``audit`` Prefect flow: every sql/ question over a scored run -> result files, then the HTML
report. Runs after ``curate`` (as its last step) or on its own, e.g. after ``curate attributes``.

Results land in ``OUT/audit-<scores digest>/NAME.<format>``: one folder per threshold set, so
re-scoring never overwrites the audit of an earlier one. Questions whose source is missing (no
attributes yet) are listed with the reason, not failed.
"""

from __future__ import annotations

from prefect import flow, task

from curate import steps

run_audits = task(steps.audit)
write_report = task(steps.report)


@flow(name="audit")
def audit_flow(out: str, fmt: str = "parquet", sql_dir: str | None = None, report: bool = True,
               scores: str | None = None) -> dict:
    result = run_audits(out, fmt, sql_dir, scores)
    if report:
        result["report"] = write_report(out, result["digest"])
    return result
