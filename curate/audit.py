"""DuckDB over a run's Parquet shards: views (no copy), the ``sql/`` question runner, ad-hoc SQL.

A question is one ``sql/NAME.sql`` file. Its leading comment says what it answers and declares
what it needs, and values reach it only as bound named parameters (``$name``), never formatted
into the text::

    -- Quality histogram of embedded faces, kept vs rejected.
    -- requires: scores
    -- param bins = 20: number of equal-width bins over 0-100
    SELECT ... floor(quality * $bins / 100.0) ...

Read-only by default: the views live in an in-memory database built from the run's completion
markers (always current, even if the output directory moved), file access is confined to the run
directory, the configuration is locked, and only queries (SELECT, WITH, DESCRIBE, SUMMARIZE,
EXPLAIN) are accepted. ``write=True`` opens ``OUT/curate.duckdb`` itself, read-write.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import logging
import os
import re
import sys

import pyarrow as pa

from curate.errors import ConfigError, InputError
from curate.io.shards import ShardStore, sql_literal

log = logging.getLogger(__name__)


def sql_dirs() -> list[str]:
    """Where the built-in questions live: the source checkout's ``sql/``, or the installed copy."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")
    return [d for d in (here, os.path.join(sys.prefix, "share", "facecurate", "sql")) if os.path.isdir(d)]


@dataclasses.dataclass(frozen=True)
class Param:
    """A question's parameter, declared in its header: ``-- param NAME = DEFAULT [in LO..HI]: doc``
    (the range inclusive; either end may be left open)."""

    name: str
    default: object
    doc: str
    lo: float | None = None
    hi: float | None = None

    def check(self, query: str, v):
        if isinstance(self.default, (int, float)) and not isinstance(self.default, bool):
            if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
                raise ConfigError(f"{query}: parameter {self.name}={v} is out of its range "
                                  f"{'' if self.lo is None else self.lo:g}..{'' if self.hi is None else self.hi:g}")
        return v


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    title: str
    description: str
    requires: tuple[str, ...]
    params: tuple[Param, ...]
    sql: str
    path: str

    def bind(self, overrides: dict[str, str] | None = None) -> dict[str, object]:
        """Defaults with ``overrides`` (strings from the command line) coerced to the default's type."""
        overrides = dict(overrides or {})
        values = {}
        for p in self.params:
            v = overrides.pop(p.name, p.default)
            if isinstance(v, str) and not isinstance(p.default, str):
                try:
                    v = type(p.default)(json.loads(v))
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.name}: parameter {p.name} wants a {type(p.default).__name__}, got {v!r}") from exc
            values[p.name] = p.check(self.name, v)
        if overrides:
            raise ConfigError(f"{self.name}: unknown parameter(s) {sorted(overrides)}; it takes {[p.name for p in self.params]}")
        return values


_PARAM = re.compile(r"^--\s*param\s+(\w+)\s*=\s*([^:]+?)(?:\s+in\s+([-\d.]*)\.\.([-\d.]*))?\s*:\s*(.*)$")


def parse_query(path: str) -> Query:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines, params, requires = [], [], ()
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if m := _PARAM.match(line):
            params.append(Param(m[1], json.loads(m[2]), m[5], *(float(x) if x else None for x in (m[3], m[4]))))
        elif line.startswith("-- requires:"):
            requires = tuple(v.strip() for v in line.split(":", 1)[1].split(",") if v.strip())
        else:
            lines.append(line[2:].strip())
    used = set(re.findall(r"\$(\w+)", text))
    declared = {p.name for p in params}
    if used != declared:
        raise ConfigError(f"{path}: parameters used {sorted(used)} but declared {sorted(declared)}")
    name = os.path.splitext(os.path.basename(path))[0]
    text_ = " ".join(lines)
    title, _, rest = text_.partition(". ")
    return Query(name, title.rstrip(".") or name, rest, requires, tuple(params), text, path)


def queries(extra_dir: str | None = None) -> dict[str, Query]:
    """The built-in questions, then ``extra_dir``'s (same name overrides), by name."""
    out: dict[str, Query] = {}
    for d in sql_dirs()[:1] + ([extra_dir] if extra_dir else []):
        for name in sorted(os.listdir(d)):
            if name.endswith(".sql"):
                q = parse_query(os.path.join(d, name))
                out[q.name] = q
    return out


READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}  # DESCRIBE, SHOW, SUMMARIZE and WITH parse as SELECT


def connect(out: str, write: bool = False, score_digest: str | None = None, saved_tables: bool = False):
    """A DuckDB connection with the run's views: plan, images, detections, scores, identities,
    curated, attributes (those that exist). ``saved_tables``: also attach OUT/curate.duckdb read-only,
    so that tables made with ``--write`` can be queried (it holds a read lock on the file while open)."""
    import duckdb

    store = ShardStore.of(out)
    if write:
        con = duckdb.connect(store.views_db())
        store.create_views(con, score_digest)
        return con
    con = duckdb.connect(":memory:")
    store.create_views(con, score_digest)
    db = store.views_db()
    if saved_tables and os.path.exists(db):  # tables made with --write, read-only; the fresh views come first
        try:
            con.execute(f"ATTACH {sql_literal(db)} AS saved (READ_ONLY)")
            con.execute("SET search_path = 'memory.main,saved.main'")
        except duckdb.Error as exc:  # another process holds it open for writing
            log.warning("%s not attached (%s): tables made with --write are not visible", db, str(exc).splitlines()[0])
    con.execute(f"SET allowed_directories = [{sql_literal(store.out + os.sep)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _read_only(stmt) -> bool:
    kind = stmt.type.name
    # PIVOT is rewritten into several statements (MULTI): a query all the same
    return kind in READ_ONLY_STATEMENTS or (kind == "MULTI" and re.match(r"\s*(UN)?PIVOT\b", stmt.query, re.I) is not None)


def run_statements(con, sql: str, params: dict | None = None, read_only: bool = True) -> list[pa.Table]:
    """Run every statement of ``sql`` in order, one result each (an empty table for statements
    that return none). In read-only mode every statement is checked before any runs: queries only
    (SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, SHOW, EXPLAIN, PIVOT)."""
    import duckdb

    try:
        stmts = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"SQL: {exc}") from exc
    if not stmts:
        raise InputError("SQL: no statement given")
    bad = [s.type.name for s in stmts if not _read_only(s)]
    if read_only and bad:
        raise InputError(f"SQL: read-only, {bad[0]} refused (only queries: SELECT, WITH, FROM, DESCRIBE, SUMMARIZE, "
                         "SHOW, EXPLAIN, PIVOT); pass --write to open curate.duckdb read-write")
    out = []
    for s in stmts:
        used = {k: v for k, v in (params or {}).items() if f"${k}" in s.query}
        try:
            rel = con.sql(s.query, params=used or None)
        except duckdb.Error as exc:
            raise InputError(f"SQL: {exc}") from exc
        out.append(rel.to_arrow_table() if rel is not None else pa.table({}))
    return out


def run_sql(con, sql: str, params: dict | None = None, read_only: bool = True) -> pa.Table:
    """Run ``sql`` (one or more statements) and return the last result."""
    return run_statements(con, sql, params, read_only)[-1]


class MissingSource(InputError):
    """A question needs a view the run does not have (e.g. demographics without an attribute source)."""


def missing_message(q: Query, have: set[str]) -> str | None:
    missing = [v for v in q.requires if v not in have]
    if not missing:
        return None
    if "attributes" in missing:
        return (f"{q.name}: no attribute source for this run, so there is nothing to report (no column is invented). "
                "Add one with `curate attributes OUT --metadata people.csv` (crawl metadata joined on identity) "
                "or `curate attributes OUT --model genderage.onnx` (an attribute model you have).")
    return f"{q.name}: this run has no {', '.join(missing)} yet (run `curate score OUT` first)"


def run_query(con, q: Query, overrides: dict[str, str] | None = None) -> pa.Table:
    import duckdb

    msg = missing_message(q, views(con))
    if msg:
        raise MissingSource(msg)
    try:
        return run_sql(con, q.sql, q.bind(overrides))
    except InputError as exc:  # a column this release's scoring writes, absent from an older one's
        cause = exc.__cause__
        if not isinstance(cause, duckdb.BinderException) or "column" not in str(cause).lower() \
                or not os.path.abspath(q.path or "").startswith(tuple(map(os.path.abspath, sql_dirs()))):
            raise
        raise InputError(f"{q.name}: the run's current scoring was written by an earlier release and lacks a "
                         f"column it needs ({str(cause).splitlines()[0]}); run `curate score OUT` to score it again "
                         "(no model runs)") from exc


# -- output ---------------------------------------------------------------------------------
def format_table(t: pa.Table, max_rows: int = 200, max_width: int = 0) -> str:
    """A plain fixed-width text table; cells longer than ``max_width`` (0: no limit) are cut, and
    binary cells (crops, embeddings) show their size."""
    rows = t.slice(0, max_rows).to_pylist()
    cols = t.column_names

    def cell(v):
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        s = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
        s = s.replace("\n", " ")
        return s if not max_width or len(s) <= max_width else s[: max(max_width - 3, 1)] + "..."

    body = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    if len(t) > max_rows:
        lines.append(f"... {len(t) - max_rows} more rows")
    return "\n".join(lines)


def _plain(v):
    """A value as CSV and JSON carry it: binary (crops, embeddings, hashes) as base64 text."""
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(v).decode()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def to_text(t: pa.Table, fmt: str, max_width: int = 0) -> str:
    """A result as text: a table, or CSV / JSON with binary cells as base64."""
    if fmt == "table":
        return format_table(t, max_width=max_width)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(t.column_names)
        for r in t.to_pylist():
            w.writerow([json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for v in map(_plain, r.values())])
        return buf.getvalue().rstrip("\n")
    if fmt == "json":
        return json.dumps([_plain(r) for r in t.to_pylist()], default=str)
    raise ConfigError(f"format {fmt!r} cannot be printed; use table, csv or json (parquet needs --output)")


def write_result(t: pa.Table, fmt: str, path_stem: str) -> str:
    import pyarrow.parquet as pq

    from curate.files import atomic_write

    path = f"{path_stem}.{ 'txt' if fmt == 'table' else fmt}"
    if fmt == "parquet":
        atomic_write(path, lambda tmp: pq.write_table(t, tmp))
    else:
        text = to_text(t, fmt) + "\n"

        def w(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        atomic_write(path, w)
    return path


