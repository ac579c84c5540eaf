"""``curate status``, ``audit``, ``sql``, ``report`` and ``export``: readers of a run (they never
take its lock, except ``sql --write``)."""

from __future__ import annotations

import json
import os
import sys

import click

from curate.cli.base import main, name_values
from curate.cli.printing import print_summary
from curate.errors import CurateError


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(out, as_json):
    """Show how far the run in OUT got: shards done, rows kept and rejected by reason."""
    from curate.io.shards import ShardStore

    print_summary(ShardStore.of(out).summary(), as_json)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--query", "-q", "names", multiple=True, help="Question(s) to run, by file name in sql/ (default: all).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE",
              help="Override a question's parameter (bound, never formatted into the SQL); repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True,
              help="Output format of each result.")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Write NAME.<format> files here instead of printing.")
@click.option("--sql-dir", type=click.Path(exists=True, file_okay=False), help="Extra questions (*.sql) of your own.")
@click.option("--list", "list_only", is_flag=True, help="List the questions, their parameters and needs.")
@click.option("--scores", "scores", default=None, metavar="DIGEST",
              help="Which scoring (digest or a prefix, see OUT/scores/; default: the current one).")
def audit(out, names, params, fmt, output, sql_dir, list_only, scores):
    """Run the SQL audits in sql/ over the run in OUT: reasons, noise per identity, quality
    histograms, identity sizes before/after, duplicate clusters, merge candidates, demographic balance
    and quality by group. Read-only; views over the Parquet shards, nothing copied."""
    from curate import audit as A

    qs = A.queries(sql_dir)
    if list_only:
        for q in qs.values():
            ps = ", ".join(f"{p.name}={p.default}" for p in q.params)
            click.echo(f"{q.name:<26} {q.title}" + (f"  [{ps}]" if ps else "") + f"  (needs {', '.join(q.requires)})")
        return
    unknown = [n for n in names if n not in qs]
    if unknown:
        raise CurateError(f"unknown question(s) {unknown}; see `curate audit OUT --list`")
    if fmt == "parquet" and not output:
        raise click.BadParameter("--format parquet needs --output DIR")
    overrides = name_values(params, "--param")
    selected = [qs[n] for n in (names or qs)]
    known = {p.name for q in selected for p in q.params}
    stray = sorted(set(overrides) - known)
    if stray:
        raise click.BadParameter(f"no question asked takes {stray}; their parameters: {sorted(known) or 'none'}",
                                 param_hint="--param")
    from curate.io.shards import ShardStore

    con = A.connect(out, score_digest=ShardStore.of(out).resolve_scoring(scores))
    have = A.views(con)
    results, failed = {}, []
    for q in (qs[n] for n in (names or qs)):
        msg = A.missing_message(q, have)
        if msg:
            click.echo(f"-- {msg}", err=True)
            failed.append(q.name)
            continue
        mine = {k: v for k, v in overrides.items() if k in {p.name for p in q.params}}
        results[q.name] = (q, A.run_query(con, q, mine))
    if output:
        os.makedirs(output, exist_ok=True)
        for name, (q, t) in results.items():
            click.echo(A.write_result(t, fmt, os.path.join(output, name)))
    elif fmt == "json":
        click.echo(json.dumps({n: t.to_pylist() for n, (q, t) in results.items()}, default=str))
    else:
        for name, (q, t) in results.items():
            click.echo(f"== {name}: {q.title}" if fmt == "table" else f"# {name}")
            click.echo(A.to_text(t, fmt) + "\n")
    if names and failed:
        sys.exit(3)


@main.command("sql")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("query", required=False)
@click.option("--file", "-f", "sql_file", type=click.File("r"), help="Read the SQL from this file ('-': standard input).")
@click.option("--interactive", "-i", is_flag=True,
              help="A prompt: statements end with ';', .quit leaves (the default with no query on a terminal).")
@click.option("--max-width", default=0, show_default=True, help="Cut table cells longer than this (0: never).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="Bind $NAME (as a string); repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True,
              help="Output format (a file name ending in .csv/.json/.parquet picks it too).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to this file (parquet: required).")
@click.option("--write", is_flag=True, help="Open OUT/curate.duckdb read-write and allow any statement.")
@click.option("--scores", "scores", default=None, metavar="DIGEST",
              help="Which scoring (digest or a prefix, see OUT/scores/; default: the current one).")
def sql_cmd(out, query, sql_file, interactive, max_width, params, fmt, output, write, scores):
    """Ad-hoc SQL over the run in OUT, like DuckDB's own CLI. Views: plan, images, detections,
    scores, identities, curated, attributes (those that exist), straight over the Parquet files,
    plus tables made earlier with --write. The SQL is QUERY ('-': standard input), or -f FILE, or a
    prompt (-i, or no query on a terminal); several statements run in order, each printed.

    Read-only by default: only queries run, and file access is confined to OUT.
    Example: curate sql OUT "SELECT reason, count(*) FROM scores GROUP BY ALL"
    """

    if write:  # the one writer of OUT/curate.duckdb while the statements run
        from curate.io.lock import run_lock

        with run_lock(out):
            return _sql(out, query, sql_file, interactive, max_width, params, fmt, output, write, scores)
    return _sql(out, query, sql_file, interactive, max_width, params, fmt, output, write, scores)


def _sql(out, query, sql_file, interactive, max_width, params, fmt, output, write, scores):
    import sys

    from curate import audit as A
    from curate.io.shards import ShardStore

    con = A.connect(out, write=write, score_digest=ShardStore.of(out).resolve_scoring(scores), saved_tables=True)
    bound = name_values(params, "--param") or None
    if query == "-" or (query is None and sql_file is None and not interactive and not sys.stdin.isatty()):
        query = sys.stdin.read()
    elif sql_file is not None:
        query = sql_file.read()
    if query is None:
        return _sql_prompt(con, bound, fmt, max_width, read_only=not write)
    results = A.run_statements(con, query, bound, read_only=not write)
    if output:
        stem, ext = os.path.splitext(output)
        if fmt == "table" and ext[1:] in ("csv", "json", "parquet"):
            fmt = ext[1:]
        click.echo(A.write_result(results[-1], fmt, stem))
        return
    shown = [t for t in results if t.num_columns] or results[-1:]
    click.echo("\n\n".join(A.to_text(t, fmt, max_width) for t in shown))


def _sql_prompt(con, params, fmt, max_width, read_only) -> None:
    """A small prompt: lines gather until one ends with ';'; errors are printed, not fatal."""
    from curate import audit as A
    from curate.errors import CurateError

    click.echo(f"views: {', '.join(sorted(A.views(con)))}. End statements with ';'; .quit to leave.")
    buf = []
    while True:
        try:
            line = click.prompt("curate" if not buf else "   ...", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            return
        if not buf and line.strip() in (".quit", ".exit", "\\q"):
            return
        buf.append(line)
        if not line.rstrip().endswith(";"):
            continue
        sql, buf = "\n".join(buf), []
        try:
            for t in A.run_statements(con, sql, params, read_only):
                if t.num_columns:
                    click.echo(A.to_text(t, fmt, max_width))
        except CurateError as exc:
            click.echo(f"error: {exc}")


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="HTML file to write (default OUT/report-<scores>.html).")
@click.option("--identities", default=12, show_default=True, type=click.IntRange(min=0),
              help="Identities in the galleries (flagged ones first).")
@click.option("--per-identity", default=8, show_default=True, type=click.IntRange(min=0),
              help="Kept and flagged faces shown per identity.")
@click.option("--scores", "scores", default=None, metavar="DIGEST",
              help="Which scoring (digest or a prefix, see OUT/scores/; default: the current one).")
def report(out, output, identities, per_identity, scores):
    """Write a static HTML report of the run in OUT (no server): summary numbers, charts, audit
    tables, demographic balance, and galleries of kept vs flagged faces with their reasons."""
    from curate.report import build_report

    click.echo(build_report(out, output, identities, per_identity, scores))


@main.command("export")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["rec", "webdataset", "folders", "folder", "hf", "fiftyone"]),
              default="rec", show_default=True,
              help="rec: MXNet train.rec/.idx/property (arcface_torch); webdataset: tar shards; folders (or folder, as "
                   "the input format is named): identity/image.jpg; hf: a Hugging Face datasets folder (Parquet and a "
                   "dataset card); fiftyone: every image, kept and rejected, as a FiftyOne dataset directory.")
@click.option("--min-quality", type=click.FloatRange(0, 100),
              help="Only kept faces with quality (the chance of matching, 0-100) at least this.")
@click.option("--shard-size", default=10000, show_default=True, help="Images per WebDataset tar shard.")
@click.option("--shuffle", type=int, default=None, metavar="SEED",
              help="WebDataset: samples in a seeded random order across shards, not identity by identity.")
@click.option("--scores", "scores", default=None, metavar="DIGEST",
              help="Which scoring (digest or a prefix, see OUT/scores/; default: the current one).")
@click.option("--exclude-leaked", is_flag=True,
              help="Leave out what `curate leakage` found in an evaluation set (OUT/leakage/): an identity whose "
                   "template or half its kept faces match, else the matching faces one by one.")
def export_cmd(out, dest, fmt, min_quality, shard_size, shuffle, scores, exclude_leaked):
    """Export the kept faces of the run in OUT (aligned 112x112 crops, grouped by identity, labels
    0..C-1) to DEST for a trainer. DEST must be new or empty; it appears complete or not at all."""
    from curate.io.export import export

    exclude = exclude_images = None
    if exclude_leaked:
        from curate.leakage import leaked

        whole, faces = leaked(out)
        exclude, exclude_images = sorted(whole), sorted(faces)
        click.echo(f"excluded     {len(exclude)} identities found in evaluation sets, and {len(exclude_images)} faces "
                   "of other identities that match an evaluation person")
    fmt = "folders" if fmt == "folder" else fmt
    r = export(out, dest, fmt, min_quality, shard_size, scores=scores, exclude=exclude, shuffle=shuffle,
               exclude_images=exclude_images)
    if fmt == "fiftyone":
        click.echo(f"exported     {r['images']} images, kept and rejected, -> {r['dest']}  (fo.Dataset.from_dir(..., "
                   "dataset_type=fo.types.LegacyFiftyOneDataset))")
        return
    click.echo(f"exported     {r['images']} images of {r['identities']} identities as {r['format']} -> {r['dest']}")
