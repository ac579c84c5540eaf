"""``curate attributes``, ``leakage`` and ``review import``: what is added to a run beside its
scoring (each holds the run's lock while it writes)."""

from __future__ import annotations

import json
import os

import click

from curate.cli.base import main, writer
from curate.errors import CurateError


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--metadata", type=click.Path(exists=True, dir_okay=False),
              help="CSV or Parquet of attributes (gender, country, ...) with a key column.")
@click.option("--key", type=click.Choice(["identity", "image_id", "source"]), default="identity", show_default=True,
              help="The metadata column that names the identity, image or source.")
@click.option("--model", type=click.Path(exists=True, dir_okay=False),
              help="An attribute ONNX model you have (insightface genderage.onnx, or a classifier with --labels).")
@click.option("--labels", metavar="NAME=a,b,c", help="Classifier output labels, e.g. skin_tone=I,II,III,IV,V,VI.")
@click.option("--mean", default=0.0, show_default=True, help="Model input normalisation: (pixel - mean) / std.")
@click.option("--std", default=1.0, show_default=True, help="See --mean (insightface genderage: mean 0, std 1).")
def attributes(out, metadata, key, model, labels, mean, std):
    """Attach demographic attributes to the run in OUT, for the demographic audits and report:
    crawl metadata joined on identity (or image_id / source), or an attribute model run on the
    stored aligned crops. Nothing is invented where no source is given."""
    from curate import demographics
    from curate.io.lock import run_lock

    if bool(metadata) == bool(model):
        raise click.BadParameter("give exactly one of --metadata or --model")
    with run_lock(out):
        if metadata:
            r = demographics.add_metadata(out, metadata, key)
        else:
            from models.attributes import OnnxAttributes

            lbl = None
            if labels:
                name, _, vals = labels.partition("=")
                lbl = {name.strip(): [v.strip() for v in vals.split(",") if v.strip()]}
            r = demographics.add_model(out, OnnxAttributes(model, lbl, mean, std))
    click.echo(f"attributes   {r['rows']} rows -> {r['path']}")
    for a, n in r["images"].items():
        click.echo(f"  {a:<20} {n} images")


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--against", "-a", multiple=True, required=True, type=click.Path(exists=True),
              help="An evaluation set: identity folders of photos, an insightface .bin, or an LFW pairs.txt "
                   "(aligned 112x112 images); repeatable.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Image root of a pairs.txt (default: its directory).")
@click.option("--min-faces", default=2, show_default=True,
              help="Same-person matches of one evaluation identity that make a crawl identity leaked.")
@click.option("--json", "as_json", is_flag=True, help="Print the leaked identities as JSON.")
@writer
def leakage(out, against, root, min_faces, as_json):
    """Benchmark leakage: embed each evaluation set with the run's own models and report the crawl
    faces and identities that match its faces (same image, or same person above the card's
    thresholds): OUT/leakage/faces.parquet and identities.parquet, and a report section.
    `curate export --exclude-leaked` leaves those identities out."""
    import pyarrow as pa

    from curate import leakage as L
    from curate.io.shards import ShardStore
    from curate.pipeline import load_models
    from curate.scoring import run_calibration

    store = ShardStore.of(out)
    cfg = store.config()
    models = load_models(cfg)
    if store.recognizer_id() and models.recognizer.id != store.recognizer_id():
        raise CurateError(f"{out} was embedded by {store.recognizer_id()}, but its config now loads {models.recognizer.id}")
    cal = run_calibration(store)[0]
    faces, idents, th = [], [], None
    for path in against:
        ev = L.eval_faces(path, models, cfg, root)
        f, i, th = L.find(out, ev, cal, min_faces)
        name = os.path.abspath(path)
        faces.append(f.append_column("against", pa.array([name] * len(f), pa.string())))
        idents.append(i.append_column("against", pa.array([name] * len(i), pa.string())))
        click.echo(f"against      {path}: {len(ev['name'])} faces; {len(set(f['image_id'].to_pylist()))} kept crawl "
                   f"faces match ({len(f)} pairs), {len(set(i['identity'].to_pylist()))} identities leaked")
    f, i = pa.concat_tables(faces), pa.concat_tables(idents)
    d = L.write(out, f, i, {"against": list(map(os.path.abspath, against)), "thresholds": th, "min_faces": min_faces})
    if as_json:
        click.echo(json.dumps(i.to_pylist(), indent=1))
        return
    click.echo(f"thresholds   same image cos >= {th['same_image']:.3f}, same person > {th['same_person']:.3f} "
               f"(impostor FMR 1e-4), templates >= {th['template']:.3f} (the card's)")
    for r in i.to_pylist()[:20]:
        click.echo(f"  {r['identity']:<32} ~ {str(r['eval_identity'] or '(unlabelled)'):<24} {r['faces_matched']} faces, "
                   f"max cos {r['max_cos']}, {r['why']}")
    click.echo(f"written      {d}/faces.parquet, identities.parquet")


@main.group()
def review():
    """Review overrides: decisions a person made on flagged faces (the review page beside the
    report), applied by `curate score` on top of the automatic ones."""


@review.command("import")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--reviewer", default=None, help="Who decided, where the file does not say.")
def review_import(out, file, reviewer):
    """Add the decisions in FILE (the review page's reviews.json, or a CSV with scope, key,
    action, value, reviewer, at, note) to OUT/reviews.parquet; `curate score OUT` applies them."""
    from curate import reviews as R
    from curate.io.lock import run_lock

    with run_lock(out):
        r = R.import_file(out, file, reviewer)
    click.echo(f"reviews      {r['imported']} imported, {r['already_there']} already there, {r['total']} in all "
               f"-> {R.path(out)}; run `curate score {out}` to apply them")
