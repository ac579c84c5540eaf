"""``curate run``, ``curate demo`` and ``curate score``: a crawl through the spine (planned and
checked here, before Ray and Prefect start), and its scoring."""

from __future__ import annotations

import json
import os

import click

from curate.cli.base import main
from curate.cli.options import (
    SCORE_OPTIONS,
    configs,
    input_format,
    run_options,
    score_config,
    score_options,
)
from curate.cli.printing import print_curation, print_dry_run, print_summary
from curate.config import ScoreConfig


def scoring_for(out: str, kw: dict) -> tuple[ScoreConfig, str | None, str | None]:
    """(score config, calibration card, note). A rerun into a run that was scored keeps that
    scoring (``curate score`` may have set other thresholds) unless a scoring option is given."""
    from curate.io.shards import ShardStore

    ctx = click.get_current_context()
    given = [k for k in SCORE_OPTIONS if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)]
    current = ShardStore(out).scoring()
    if not given and current and current.get("config"):
        return (ScoreConfig(**current["config"]), current.get("calibration"),
                f"scoring    the thresholds of the current scoring {current['digest']} (pass a scoring option to "
                "change them; reviews imported since are applied)")
    return score_config(kw), kw.get("calibration"), None


def preflight(input_path, input_format, input_options, out, cfg):
    """Everything that can be checked before Prefect and Ray start, in well under a second: the
    config (already built), the input's shape, the output directory and the run in it, the models'
    files. -> (the source, the run's manifest or None for a new run)."""
    from curate.io.shards import ShardStore
    from curate.io.sources import open_source
    from models import preflight as models_preflight

    models_preflight(cfg.detect.detector, cfg.embed.recognizer)  # names first: a config error before an input error
    source = open_source(input_path, input_format, **input_options)
    return source, ShardStore(out).check(source, cfg)


def curate(input_path, input_format, input_options, kw: dict) -> dict:
    """Plan (here), then the steps: in this process for a small crawl, else the curate flow (spine on
    Ray, scoring, audits); prints the summary."""
    from curate.io.lock import run_lock
    from curate.io.shards import ShardStore
    from curate.survey import index_summary, summary_lines

    out, as_json = kw["out"], kw["as_json"]
    cfg, res, _ = configs(kw)
    score_cfg, calibration, note = (None, None, None) if kw["no_score"] else scoring_for(out, kw)
    source, _ = preflight(input_path, input_format, input_options, out, cfg)
    with run_lock(out):
        store = ShardStore(out)  # planned here, before Ray and Prefect start: a bad crawl fails at once
        store.open_run(source, cfg, res.local_workers())
        from curate.steps import engine_for

        engine, why = engine_for(res.engine, store.manifest["items"], res)
        if not as_json:
            plan = index_summary(store.index_file())
            plan["empty_identities"] = store.manifest.get("empty_identities", 0)
            for line in summary_lines(plan):
                click.echo(line)
            click.echo(f"engine       {engine} ({why})")
        args = dict(input_path=input_path, out=out, config=cfg.to_dict(), resources=res.__dict__,
                    input_format=input_format, input_options=input_options, allow_download=kw["allow_download"],
                    progress=not kw["no_progress"], score_config=None if score_cfg is None else score_cfg.__dict__,
                    calibration=calibration)
        if engine == "local":
            from curate.steps import run_in_process

            summary = run_in_process(**args, audit_after=not kw["no_audit"])
        else:
            from flows import quiet_prefect_errors
            from flows.curate_flow import curate_flow  # noqa: I001  (Ray and Prefect load here, not at import)

            quiet_prefect_errors()
            summary = curate_flow(**args, audit=not kw["no_audit"])
    if note and not as_json:
        click.echo(note)
    print_summary(summary, as_json)
    return summary


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@input_format
@click.option("--identity-col", default=None, help="TSV: identity column index; Parquet: column name.")
@click.option("--data-col", default=None, help="TSV: base64 image column index; Parquet: image-bytes column name.")
@click.option("--path-col", default=None, help="Parquet manifest: column of image paths.")
@click.option("--path-root", default=None, type=click.Path(exists=True, file_okay=False),
              help="Parquet manifest: absolute paths must lie under this directory (default: the manifest's own).")
@click.option("--labels", "labels_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help=".rec: class label -> identity name ('label<TAB>name' lines, or curate export's labels.tsv, "
                   "which is read by default when it lies beside the .rec).")
@click.option("--no-follow-links", is_flag=True,
              help="Folders: links must resolve inside INPUT (by default links to folders and files are followed "
                   "wherever they point, as find -L does, with a loop check; the resolved path is recorded).")
@click.option("--dry-run", is_flag=True,
              help="Plan the crawl and print identities, images per identity, formats, bytes to read and an ETA "
                   "from a short timed sample through the spine; write nothing.")
@run_options
def run(input_path, input_format, identity_col, data_col, path_col, path_root, labels_file, no_follow_links, dry_run,
        **kw):
    """Curate a crawl: INPUT is an identity/image folder tree, a .rec (with its .idx), an MS-Celeb TSV,
    an uncompressed .tar of identity/image members, or a Parquet table of (identity, image bytes or path).

    Decodes, detects, aligns (5-point ArcFace template, 112x112) and embeds every image on Ray,
    orchestrated by a Prefect flow, into OUT/images and OUT/detections Parquet shards, with DuckDB
    views in OUT/curate.duckdb. Rerun the same command to resume.
    """
    from curate.io.sources import options_from

    options = options_from(input_format, input_path, {
        "identity_col": identity_col, "data_col": data_col, "path_col": path_col, "path_root": path_root,
        "labels": labels_file, "no_follow_links": no_follow_links})
    if dry_run:
        return dry(input_path, input_format, options, kw)
    curate(input_path, input_format, options, kw)


def dry(input_path, input_format, options, kw) -> None:
    from curate.survey import dry_run

    cfg, res, _ = configs(kw)
    source, existing = preflight(input_path, input_format, options, kw["out"], cfg)
    s = dry_run(source, cfg, workers=res.workers, threads=res.threads_per_worker)
    if kw["as_json"]:
        click.echo(json.dumps(s, indent=1))
        return
    print_dry_run(s, kw["out"], existing)


@main.command()
@click.option("--variants", default=6, show_default=True, help="Re-photographed variants per identity.")
@run_options
def demo(variants, **kw):
    """Build a small real crawl from face photos that installed packages ship (scikit-image,
    insightface; plus a bounded slice of ../shared/data/faces when present) and curate it like
    `curate run`, audits and HTML report included."""
    from curate.sample import build_sample_crawl, shared_faces

    out = kw["out"]
    crawl = os.path.join(out, "sample-crawl")
    if not os.path.isdir(crawl):
        n = build_sample_crawl(crawl, variants=variants, shared_data=str(shared_faces()))
        click.echo(f"sample crawl: {n} files in {crawl}")
    run_dir = os.path.join(out, "run")
    curate(crawl, "folder", {}, {**kw, "out": run_dir})
    click.echo(f"next         curate audit {run_dir}   |   curate export {run_dir} {os.path.join(out, 'export')} --format rec")


@main.command("score")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@score_options
@click.option("--partition-rows", type=click.IntRange(min=1000), default=None,
              help="Images per scoring partition (default 250000, about 1.5 GB of memory a task). A run with more is "
                   "scored partition by partition on Ray (RAY_ADDRESS joins a cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def score_cmd(out, as_json, partition_rows, **kw):
    """Score and select the run in OUT again with new thresholds: label noise (sub-center
    dominance), duplicates, merged identities, quality. Uses the stored embeddings: no model runs.
    Writes OUT/scores, OUT/identities, OUT/curated for this threshold set and updates the views.
    Without a scoring option it scores again with the current scoring's thresholds (after a
    `review import`, say): nothing reverts silently. A scoring killed part way resumes where it
    stopped when run again with the same options."""
    from curate.scoring import score_run
    from flows.ray_exec import ray_map

    cfg, calibration, note = scoring_for(out, kw)
    if note and not as_json:
        click.echo(note)
    s = score_run(out, cfg, calibration, mapper=ray_map, part_rows=partition_rows)
    print_curation(s, as_json)


@main.command("score-embeddings")
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", required=True, help="The identity of each row: a column of the Parquet input, or a .npy/.txt file.")
@click.option("--ids", default=None, help="Image ids (default row<i>): a column, or a .npy/.txt file.")
@click.option("--norms", default=None, help="Raw feature norms (for quality): a column, or a .npy file. Default: the "
                                           "rows' own norms when they are not unit length.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="The run directory to write.")
@score_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def score_embeddings_cmd(embeddings, labels, ids, norms, out, as_json, **kw):
    """Score embeddings you made with your own recognizer (a .npy matrix or a Parquet table with an
    'embedding' column): label noise, near-identical shots, merged identities and quality, with no
    photo and no model. Writes a normal run directory, so `curate score`, `sql`, `audit`, `report`
    and `export` work on it (with no photos, there are no crops to show or export). Thresholds come
    from the scoring options, --calibration CARD (from `curate calibrate` on your recognizer), else
    the data, with a warning. From Python: facecurate.score_embeddings."""
    import pyarrow as pa

    from curate.api import norms_of, spine_rows
    from curate.config import EmbedConfig, RunConfig
    from curate.io.lock import run_lock
    from curate.io.shards import ShardStore
    from curate.io.sources import EmbeddingsSource
    from curate.schema import detections_schema, images_schema
    from curate.scoring import score_run

    source = EmbeddingsSource(embeddings, **{k: v for k, v in (("labels", labels), ("ids", ids), ("norms", norms)) if v})
    emb, label, image_ids, raw = source.load()
    raw = raw if raw is not None else norms_of(emb)
    cfg = RunConfig(embed=EmbedConfig(recognizer="embeddings"))
    dim = emb.shape[1]
    with run_lock(out):
        store = ShardStore(out)
        store.open_run(source, cfg)
        ischema, dschema = images_schema(dim), detections_schema(dim)
        for s in store.pending():
            index = store.shard_index(s)
            a, b = int(index["item"][0].as_py()), int(index["item"][-1].as_py()) + 1
            rows = spine_rows(image_ids, label, emb, raw, {}, a, b)
            n = len(rows)
            full = {f.name: rows[f.name] if f.name in rows.column_names else pa.nulls(n, f.type) for f in ischema}
            full.update(item=index["item"], source=index["source"], embedding=rows["embedding"].cast(ischema.field("embedding").type))
            full["sha1"] = pa.nulls(n, pa.string())  # no bytes
            store.commit(s, pa.table(full, schema=ischema), dschema.empty_table(), {"seconds": {}})
        store.write_views()
    cfg_s, calibration, note = scoring_for(out, kw)
    if note and not as_json:
        click.echo(note)
    s = score_run(out, cfg_s, calibration)
    if not as_json:
        click.echo(f"input        {embeddings}: {len(emb):,} embeddings of dimension {dim}, "
                   f"{len(set(label.to_pylist())):,} identities" + ("" if raw is not None else "; unit rows: no quality"))
    print_curation(s, as_json)
    if not as_json:
        click.echo(f"next         curate audit {out}   |   curate report {out}   |   curate sql {out} \"SELECT ...\"")

