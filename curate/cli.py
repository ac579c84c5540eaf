"""``curate``: the command line, a thin layer over the library.

Orchestrated commands import ``flows`` (Ray, Prefect) only when they run, so the library and
``--help`` never load them. Library errors map to exit codes (see curate.errors).
"""

from __future__ import annotations

import json
import os
import sys

import click

from curate.config import (
    AlignConfig,
    DecodeConfig,
    DetectConfig,
    EmbedConfig,
    Resources,
    RunConfig,
    ScoreConfig,
)
from curate.errors import CurateError


class _Command(click.Command):
    """--help lists the required options first (then the rest, in declaration order). Errors end
    the command with one line: a library error its own message and exit code; Ctrl-C a line that
    says how to resume; anything unexpected the step, the exception and a log file holding the
    full traceback (in OUT/logs/)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        return sorted(params, key=lambda p: not (isinstance(p, click.Option) and p.required))

    def invoke(self, ctx):
        from curate.supervise import INTERRUPTED, crash_report

        try:
            return super().invoke(ctx)
        except (CurateError, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)
        except Exception as exc:
            out = ctx.params.get("out")
            click.echo(crash_report(exc, os.path.abspath(out) if out else None), err=True)
            sys.exit(1)


class _Group(click.Group):
    command_class = _Command
    group_class = type

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CurateError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facecurate")
def main():
    """facecurate: turn a noisy web face crawl into clean, quality-ranked training shards.

    Every input image ends up in the output shards with `keep` and a `reason`; runs resume
    where they stopped.
    """


def _writer(f):
    """The command writes the run directory OUT: it holds OUT's lock (curate.io.lock) throughout,
    so a second writer is refused at once and readers never wait."""
    import functools

    @functools.wraps(f)
    def wrapped(*args, **kw):
        from curate.io.lock import run_lock

        with run_lock(kw["out"]):
            return f(*args, **kw)

    return wrapped


def _run_options(f):
    opts = [
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output directory (shards, DuckDB file)."),
        click.option("--detector", default="yunet", show_default=True,
                     help="yunet (MIT) | scrfd[:file.onnx] (InsightFace, non-commercial) | dlib-hog | dlib-mmod | "
                          "insightface:<model.onnx|model dir|pack name>."),
        click.option("--recognizer", default="edgeface_s", show_default=True,
                     help="edgeface_s (BSD-3) | w600k_mbf (InsightFace, non-commercial) | sface (Apache-2.0) | "
                          "dlib-resnet | onnx:<model.onnx> | insightface:<model dir|pack name>."),
        click.option("--workers", "-w", default=0, show_default=True, help="Ray workers (0: one per CPU)."),
        click.option("--threads", default=1, show_default=True, help="CPUs (and onnxruntime threads) per Ray worker."),
        click.option("--gpus", default=0.0, show_default=True, help="GPUs per worker (used only where Ray sees GPUs)."),
        click.option("--shard-size", default=2000, show_default=True, help="Images per shard (unit of work and resume)."),
        click.option("--batch-size", default=64, show_default=True, help="Images processed together inside a shard."),
        click.option("--min-face-size", default=20.0, show_default=True, help="Chosen faces smaller than this (px) are rejected as too_small."),
        click.option("--det-score", type=float, default=None, help="Detector score threshold (default: the detector's own)."),
        click.option("--upsample", default=1, show_default=True, help="dlib: pyramid upsampling (1 finds faces down to ~40 px)."),
        click.option("--det-size", default=640, show_default=True,
                     help="ONNX detectors: longest input side in px (smaller images run at their own size)."),
        click.option("--allow-download", is_flag=True, help="Let insightface download a named model pack (off: no network)."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--no-score", is_flag=True, help="Stop after embedding (no noise/duplicate/quality scoring)."),
        click.option("--no-audit", is_flag=True, help="After scoring, skip the sql/ audits (OUT/audit-<scores>/) and the HTML report."),
    ]
    for o in reversed(opts):
        f = o(f)
    return _score_options(f)


def _score_options(f):
    opts = [
        click.option("--far-angle", type=float, default=None,
                     help="far_from_dominant beyond this angle (deg) to the identity's dominant center, the face left out "
                          "(default: the recognizer card's calibrated threshold; see `curate calibrate`)."),
        click.option("--mode", type=click.Choice(["kmeans", "head"]), default="kmeans", show_default=True,
                     help="Sub-centers by spherical k-means, or by a sub-center ArcFace head fitted on the embeddings (torch)."),
        click.option("--drop-non-dominant", is_flag=True, help="Also reject faces in non-dominant sub-centers within the far angle."),
        click.option("--merge-angle", type=float, default=None,
                     help="Sub-centers this close (deg) to the dominant one are the same person (default: the card's merge threshold)."),
        click.option("--min-dominant-share", default=0.5, show_default=True, help="Identities below this share are flagged for review."),
        click.option("--dup-threshold", type=float, default=None,
                     help="Cosine at which two faces are the same photo (default: the card's; byte-identical files always are)."),
        click.option("--merge-threshold", type=float, default=None,
                     help="Center cosine at which two identities are one person (default: the card's)."),
        click.option("--conflict-margin", default=0.05, show_default=True, help="Cosine by which a face must be nearer another identity."),
        click.option("--unidentifiable-pct", default=1.0, show_default=True,
                     help="Quality (reference percentile) at or below which, with a degradation cue, a face is unidentifiable."),
        click.option("--ambiguous-pct", default=5.0, show_default=True,
                     help="A face that is far or nearer another identity, with quality at or below this and a degradation cue, is unidentifiable, not label noise."),
        click.option("--calibration", type=click.Path(exists=True, dir_okay=False),
                     help="A model card (from `curate calibrate`) whose calibration to use instead of the run's recognizer card."),
        click.option("--quality-model", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="A quality head ONNX (bench/quality_head.py --export) run on the stored raw features: its output "
                          "norm, a percentile of its card's reference, is the quality signal."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


SCORE_OPTIONS = ("far_angle", "mode", "drop_non_dominant", "merge_angle", "min_dominant_share", "dup_threshold",
                 "merge_threshold", "conflict_margin", "unidentifiable_pct", "ambiguous_pct", "quality_model",
                 "calibration")


def _score_config(far_angle, mode, drop_non_dominant, merge_angle, min_dominant_share, dup_threshold, merge_threshold,
                  conflict_margin, unidentifiable_pct, ambiguous_pct=5.0, quality_model=None, calibration=None) -> ScoreConfig:
    return ScoreConfig(far_angle=far_angle, mode=mode, drop_non_dominant=drop_non_dominant, merge_angle=merge_angle,
                       min_dominant_share=min_dominant_share,
                       dup_threshold=dup_threshold, merge_threshold=merge_threshold, conflict_margin=conflict_margin,
                       unidentifiable_pct=unidentifiable_pct, ambiguous_pct=ambiguous_pct,
                       quality_model=os.path.abspath(quality_model) if quality_model else None)


def _config(detector, recognizer, shard_size, min_face_size, det_score, upsample, det_size) -> RunConfig:
    return RunConfig(
        shard_size=shard_size,
        decode=DecodeConfig(),
        detect=DetectConfig(detector=detector, min_score=det_score, upsample=upsample, min_face_size=min_face_size,
                            det_size=det_size),
        align=AlignConfig(),
        embed=EmbedConfig(recognizer=recognizer),
    )


def _scoring_for(out: str, score_kw: dict) -> tuple[ScoreConfig, str | None, str | None]:
    """(score config, calibration card, note). A rerun into a run that was scored keeps that
    scoring (``curate score`` may have set other thresholds) unless a scoring option is given."""
    from curate.io.shards import ShardStore

    ctx = click.get_current_context()
    given = [k for k in SCORE_OPTIONS if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)]
    current = ShardStore(out).scoring()
    if not given and current and current.get("config"):
        return (ScoreConfig(**current["config"]), current.get("calibration"),
                f"scoring    kept the current scoring {current['digest']} (pass a scoring option to score anew)")
    return _score_config(**score_kw), score_kw.get("calibration"), None


def _preflight(input_path, input_format, input_options, out, cfg):
    """Everything that can be checked before Prefect and Ray start, in well under a second: the
    config (already built), the input's shape, the output directory and the run in it, the models'
    files. -> (the source, the run's manifest or None for a new run)."""
    from curate.io.shards import ShardStore
    from curate.io.sources import open_source
    from models import preflight

    preflight(cfg.detect.detector, cfg.embed.recognizer)  # names first: a config error before an input error
    source = open_source(input_path, input_format, **input_options)
    return source, ShardStore(out).check(source, cfg)


def _configs(kw: dict) -> tuple[RunConfig, Resources]:
    """The run's config and resources from the run options; the scoring options are checked too
    (a dry run refuses what the real run would)."""
    cfg = _config(kw["detector"], kw["recognizer"], kw["shard_size"], kw["min_face_size"], kw["det_score"],
                  kw["upsample"], kw["det_size"])
    res = Resources(workers=kw["workers"], threads_per_worker=kw["threads"], gpus_per_worker=kw["gpus"],
                    batch_size=kw["batch_size"])
    _score_config(**{k: kw[k] for k in SCORE_OPTIONS if k in kw and k != "calibration"})
    return cfg, res


def _curate(input_path, input_format, input_options, out, detector, recognizer, workers, threads, gpus, shard_size,
            batch_size, min_face_size, det_score, upsample, det_size, allow_download, no_progress, as_json, no_score=False,
            no_audit=False, **score_kw):
    from curate.io.lock import run_lock
    from curate.io.shards import ShardStore
    from curate.survey import index_summary, summary_lines

    cfg, res = _configs({**locals(), **score_kw})
    score_cfg, calibration, note = (None, None, None) if no_score else _scoring_for(out, score_kw)
    source, existing = _preflight(input_path, input_format, input_options, out, cfg)
    with run_lock(out):
        store = ShardStore(out)  # planned here, before Ray and Prefect start: a bad crawl fails at once
        store.open_run(source, cfg, res.workers or max(1, (os.cpu_count() or 1) // res.threads_per_worker))
        if not as_json:
            plan = index_summary(store.index_file())
            plan["empty_identities"] = store.manifest.get("empty_identities", 0)
            for line in summary_lines(plan):
                click.echo(line)
        from flows import quiet_prefect_errors
        from flows.curate_flow import (
            curate_flow,  # Ray and Prefect load here, not at import
        )

        quiet_prefect_errors()
        summary = curate_flow(
            input_path=input_path, out=out, config=cfg.to_dict(), resources=res.__dict__, input_format=input_format,
            input_options=input_options, allow_download=allow_download, progress=not no_progress,
            score_config=None if score_cfg is None else score_cfg.__dict__, audit=not no_audit, calibration=calibration,
        )
    if note and not as_json:
        click.echo(note)
    _print_summary(summary, as_json)
    return summary


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.option("--format", "input_format", type=click.Choice(["folder", "rec", "tsv", "tar", "parquet"]), default=None,
              help="Input kind (default: guessed from INPUT).")
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
@_run_options
def run(input_path, input_format, identity_col, data_col, path_col, path_root, labels_file, no_follow_links, dry_run,
        **kw):
    """Curate a crawl: INPUT is an identity/image folder tree, a .rec (with its .idx), an MS-Celeb TSV,
    an uncompressed .tar of identity/image members, or a Parquet table of (identity, image bytes or path).

    Decodes, detects, aligns (5-point ArcFace template, 112x112) and embeds every image on Ray,
    orchestrated by a Prefect flow, into OUT/images and OUT/detections Parquet shards, with DuckDB
    views in OUT/curate.duckdb. Rerun the same command to resume.
    """
    options = {}
    kind = input_format or {".tsv": "tsv", ".parquet": "parquet", ".rec": "rec"}.get(os.path.splitext(input_path)[1].lower())
    if labels_file:
        if kind != "rec" and not (os.path.isdir(input_path) and any(f.endswith(".rec") for f in os.listdir(input_path))):
            raise click.BadParameter("--labels is for .rec input", param_hint="--labels")
        options = {"labels": os.path.abspath(labels_file)}
    elif kind == "tsv":
        options = {k: int(v) for k, v in (("identity_col", identity_col), ("data_col", data_col)) if v is not None}
    elif kind == "parquet" or (kind is None and os.path.isdir(input_path)):
        names = {"identity_col": identity_col, "image_col": data_col, "path_col": path_col,
                 "path_root": path_root and os.path.abspath(path_root)}
        options = {k: v for k, v in names.items() if v is not None}
    if no_follow_links:
        if not os.path.isdir(input_path):
            raise click.BadParameter("--no-follow-links is for folder input", param_hint="--no-follow-links")
        options["follow_links"] = False
    if dry_run:
        return _dry_run(input_path, input_format, options, kw)
    _curate(input_path, input_format, options, **kw)


def _dry_run(input_path, input_format, options, kw) -> None:
    from curate.survey import dry_run, summary_lines

    cfg, _ = _configs(kw)
    source, existing = _preflight(input_path, input_format, options, kw["out"], cfg)
    s = dry_run(source, cfg, workers=kw["workers"], threads=kw["threads"])
    if kw["as_json"]:
        click.echo(json.dumps(s, indent=1))
        return
    for line in summary_lines(s):
        click.echo(line)
    mb = s["bytes"] / 1e6
    click.echo(f"bytes        {mb / 1e3:.3g} GB to read" if mb >= 1000 else f"bytes        {mb:.3g} MB to read" + (" (estimated from a sample of files)" if s["bytes_estimated"] else ""))
    if "sample" in s:
        smp = s["sample"]
        eta = int(s["eta_seconds"])
        when = f"{eta} s" if eta < 120 else f"{eta // 3600} h {eta % 3600 // 60} min"
        click.echo(f"sample       {smp['images']} images through the spine: {smp['seconds_per_image'] * 1000:.0f} ms each on one "
                   f"core (" + ", ".join(f"{k} {v}" for k, v in smp["reasons"].items()) + ")")
        click.echo(f"eta          ~{when} with {smp['workers']} workers on this machine, plus scoring")
    click.echo(f"output       {kw['out']}: " + ("resumes the run there" if existing else "nothing written (dry run)"))


@main.command()
@click.option("--variants", default=6, show_default=True, help="Re-photographed variants per identity.")
@_run_options
def demo(variants, out, **kw):
    """Build a small real crawl from face photos that installed packages ship (scikit-image,
    insightface; plus a bounded slice of ../shared/data/faces when present) and curate it like
    `curate run`, audits and HTML report included."""
    from curate.sample import build_sample_crawl

    crawl = os.path.join(out, "sample-crawl")
    if not os.path.isdir(crawl):
        shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "faces")
        n = build_sample_crawl(crawl, variants=variants, shared_data=os.path.normpath(shared))
        click.echo(f"sample crawl: {n} files in {crawl}")
    run_dir = os.path.join(out, "run")
    _curate(crawl, "folder", {}, run_dir, **kw)
    click.echo(f"next         curate audit {run_dir}   |   curate export {run_dir} {os.path.join(out, 'export')} --format rec")


def _name_values(values, hint: str, typed: bool = False) -> dict:
    """NAME=VALUE options -> {name: value}; ``typed``: numbers and true/false become such (else
    strings, bound as they are)."""
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep:
            raise click.BadParameter(f"{v!r}: expected NAME=VALUE", param_hint=hint)
        if typed:
            try:
                val = int(val) if val.lstrip("-").isdigit() else float(val)
            except ValueError:
                val = {"true": True, "false": False}.get(val.lower(), val)
        out[k.strip()] = val
    return out


@main.command()
@click.argument("shards", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Directory for checkpoints, model.onnx, model card.")
@click.option("--backbone", default="r50", show_default=True, help="r18 | r34 | r50 | r100 | mbf.")
@click.option("--head", default="arcface", show_default=True,
              help="softmax | cosface | arcface | combined | subcenter | magface | adaface.")
@click.option("--head-arg", multiple=True, help="Head hyper-parameter NAME=VALUE (e.g. m=0.4, k=3, lambda_g=35); repeatable.")
@click.option("--embedding-size", default=512, show_default=True, help="Embedding dimension.")
@click.option("--epochs", default=20, show_default=True, help="Epochs.")
@click.option("--batch-size", default=128, show_default=True, help="Images per step.")
@click.option("--lr", default=0.1, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True, help="Optimizer.")
@click.option("--schedule", type=click.Choice(["poly", "step"]), default="poly", show_default=True, help="Decay after warmup.")
@click.option("--warmup-epochs", default=1.0, show_default=True, help="Linear warmup length.")
@click.option("--sample-rate", default=1.0, show_default=True, help="Partial FC: fraction of class centers per step.")
@click.option("--all-rows", is_flag=True, help="Train on every row with a crop, not only the kept ones (baseline).")
@click.option("--adaface-augment", is_flag=True, help="AdaFace's crop / low-res / colour-jitter augmentations (p=0.2 each).")
@click.option("--drop-subcenters-at", type=int, default=None, help="Sub-center head: K=3->1 at this epoch (drop samples beyond 75 deg).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the backbone.")
@click.option("--workers", default=2, show_default=True, help="DataLoader workers.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps (smoke runs).")
@click.option("--eval-bin", multiple=True, type=click.Path(exists=True), help="insightface .bin verification set; repeatable.")
@click.option("--eval-pairs", type=click.Path(exists=True), default=None, help="LFW-format pairs.txt over aligned 112x112 images.")
@click.option("--eval-root", type=click.Path(exists=True), default=None, help="Image root for --eval-pairs.")
@click.option("--device", default=None, help="cuda | cpu (default: cuda when available).")
@click.option("--no-progress", is_flag=True, help="No progress bar (loss, images/s, time left).")
def retrain(shards, out, backbone, head, head_arg, embedding_size, epochs, batch_size, lr, optimizer, schedule,
            warmup_epochs, sample_rate, all_rows, adaface_augment, drop_subcenters_at, compile_, workers, max_steps,
            eval_bin, eval_pairs, eval_root, device, no_progress):
    """Train a face recognizer on curated shards (SHARDS: a `curate run` output directory or Parquet
    shards), evaluate it on verification pairs, and export OUT/model.onnx with a model card.

    The exported model is the next round's recognizer: `curate run ... --recognizer onnx:OUT/model.onnx`.
    Rerun the same command to resume from the last epoch's checkpoint.
    """
    import dataclasses

    from models.train import TrainConfig

    cfg = TrainConfig(backbone=backbone, head=head, head_kwargs=_name_values(head_arg, "--head-arg", typed=True), embedding_size=embedding_size,
                      epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                      warmup_epochs=warmup_epochs, sample_rate=sample_rate, kept_only=not all_rows,
                      adaface_augment=adaface_augment, drop_subcenters_at=drop_subcenters_at, compile=compile_,
                      num_workers=workers, max_steps=max_steps)
    if eval_pairs and not eval_root:
        raise click.BadParameter("--eval-pairs needs --eval-root")
    from models.train import check_resume

    check_resume(os.path.join(out, "train"), cfg)  # another training in OUT: refused before anything starts
    from flows.retrain_flow import retrain_flow

    summary = retrain_flow(shards=shards, out=out, config=dataclasses.asdict(cfg), bins=list(eval_bin),
                           pairs=[(eval_pairs, eval_root)] if eval_pairs else [], device=device,
                           progress=not no_progress)
    click.echo(json.dumps(summary, indent=1))
    for w in summary.get("warnings", []):
        click.echo(f"WARNING      {w}", err=True)


@main.command()
@click.option("--recognizer", required=True, help="The recognizer to calibrate (a registry name, onnx:<file>, ...).")
@click.option("--detector", default="yunet", show_default=True, help="The detector whose landmarks align the crops.")
@click.option("--reference", required=True, type=click.Path(exists=True, file_okay=False),
              help="A labelled identity-folder tree (identity/image), clean: e.g. ../shared/data/faces.")
@click.option("--out", "-o", "card_out", type=click.Path(dir_okay=False),
              help="Card to write the calibration into (merged; default: <model>.card.json beside an onnx: file).")
@click.option("--duplicates", default=300, show_default=True, help="Near-duplicate copies made of reference photos.")
@click.option("--degraded", default=200, show_default=True, help="Photos degraded six ways to choose the quality signals.")
@click.option("--seed", default=0, show_default=True, help="Seed of the copies and samples.")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate(recognizer, detector, reference, card_out, duplicates, degraded, seed, as_json):
    """Measure what a recognizer's angles, cosines and norms mean on a labelled reference set and
    store it in its model card: far-from-dominant, duplicate and merge thresholds, the norm (and
    other quality signals') reference percentiles. `curate run`/`score` then take thresholds and
    quality from the card instead of guessing them from the crawl being curated."""
    from curate.calibration import calibrate_reference, reference_rows
    from curate.pipeline import load_models
    from models.cards import card_path, detector_name, read_card, write_card

    cfg = RunConfig(detect=DetectConfig(detector=detector), embed=EmbedConfig(recognizer=recognizer))
    if card_out is None:
        name, _, arg = recognizer.partition(":")
        if name not in ("onnx", "adaface", "magface"):
            raise click.BadParameter("give --out CARD.json (only a recognizer read from a file has a default card path)")
        card_out = card_path(arg)
    models = load_models(cfg)
    rec = models.recognizer
    from tqdm import tqdm

    with tqdm(unit="img", desc="calibrate") as bar:
        ref = reference_rows(reference, models, cfg, duplicates=duplicates, degraded=degraded, seed=seed,
                             on_batch=bar.update)
    if len(ref.rows) < 20 or len(set(ref.rows["identity"].to_pylist())) < 3:
        raise CurateError(f"{reference}: {len(ref.rows)} usable faces of {len(set(ref.rows['identity'].to_pylist()))} "
                          "identities; a calibration needs at least 20 faces of 3 identities")
    cal = calibrate_reference(ref, seed)
    cal["reference"]["set"] = os.path.abspath(reference)
    card = read_card(card_out) if os.path.exists(card_out) else {k: v for k, v in rec.card.items() if not k.startswith("_")}
    card.setdefault("name", rec.id.split("@")[0])
    card.setdefault("task", "recognition")
    if getattr(rec, "sha256", None) and not card.get("sha256"):
        card["sha256"] = rec.sha256
    card.setdefault("calibrations", {})[detector_name(models.detector.id)] = cal
    write_card(card_out, card)
    if as_json:
        click.echo(json.dumps(cal, indent=1))
        return
    th, v, q = cal["thresholds"], cal["verification"], cal["quality"]
    click.echo(f"calibrated   {rec.id} with {models.detector.id} on {cal['reference']['faces']} faces of "
               f"{cal['reference']['identities']} identities -> {card_out}")
    click.echo(f"thresholds   far angle {th['far_angle']} deg (floor {th['far_angle_floor']}, ceiling {th['far_angle_ceiling']}), "
               f"duplicate cos {th['dup_cos']}, merge cos {th['merge_cos']}")
    click.echo(f"verification TAR@FAR 1e-3 {v['tar_at_far_0.001']}, 1e-4 {v['tar_at_far_0.0001']}")
    click.echo(f"quality      {' + '.join(q['signals'])} (degraded-below-original AUC "
               + ", ".join(f"{k} {a['mean']}" for k, a in q["auc"].items()) + ")")


@main.command()
@click.option("--faces", type=click.Path(exists=True, file_okay=False), default=None,
              help="Identity-folder tree of real faces to build crawls from (default ../shared/data/faces).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the crawls, comma separated (tuning seeds).")
@click.option("--holdout", type=int, default=7, show_default=True,
              help="A seed reported apart, never to be tuned on (-1: none).")
@click.option("--flip", default=0.05, show_default=True, help="Closed-set label flips, share of clean photos.")
@click.option("--distractor", default=0.03, show_default=True, help="Open-set distractors, share of clean photos.")
@click.option("--duplicate", default=0.05, show_default=True, help="Re-saved copies, share of clean photos.")
@click.option("--unidentifiable", default=0.03, show_default=True, help="Degraded copies, share of clean photos.")
@click.option("--nonface", default=0.01, show_default=True, help="Photos without a face, share of clean photos.")
@click.option("--split", default=2, show_default=True, help="People crawled under two labels.")
@click.option("--open-set", default=0.15, show_default=True, help="Share of people kept out of the set (distractor sources).")
@click.option("--max-photos", default=20, show_default=True, help="Photos per person at most.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave out identity folders matching this pattern (fnmatch; repeatable), e.g. sources with "
                   "label noise of their own that the truth would count as clean.")
@click.option("--baseline", is_flag=True, help="Also run cleanlab's find_label_issues (the [bench] extra; AGPL).")
@click.option("--no-sweeps", is_flag=True, help="Skip the threshold sweeps.")
@_run_options
@_writer
def bench(faces, seeds, holdout, flip, distractor, duplicate, unidentifiable, nonface, split, open_set, max_photos,
          exclude, baseline, no_sweeps, **kw):
    """Benchmark the curation on real faces: build MS1MV0-style noisy crawls (label flips, open-set
    distractors, re-saved copies, a person under two labels, degraded copies, non-faces) with the truth
    recorded per file, curate each like `curate run`, and score the result against the truth: purity,
    clean retention, precision and recall of every flag, error-versus-discard of each quality signal,
    threshold sweeps; mean and spread over seeds, and a held-out seed apart. OUT is the benchmark
    directory (resumable): OUT/seed-<s>/run is each seed's curate run, with the benchmark in its report."""
    from curate.benchmark import Noise

    out = kw["out"]

    if faces is None:
        faces = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "faces"))
        if not os.path.isdir(faces):
            raise click.BadParameter(f"no {faces}; pass --faces DIR (identity folders of real faces)")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: comma-separated integers", param_hint="--seeds") from None
    noise = Noise(flip=flip, distractor=distractor, duplicate=duplicate, unidentifiable=unidentifiable, nonface=nonface,
                  split=split, open_set=open_set, max_photos=max_photos, exclude=tuple(exclude))
    cfg = _config(kw["detector"], kw["recognizer"], kw["shard_size"], kw["min_face_size"], kw["det_score"],
                  kw["upsample"], kw["det_size"])
    score_cfg = _score_config(**{k: kw[k] for k in SCORE_OPTIONS if k != "calibration"})
    res = Resources(workers=kw["workers"], threads_per_worker=kw["threads"], gpus_per_worker=kw["gpus"],
                    batch_size=kw["batch_size"])
    from models import preflight

    preflight(cfg.detect.detector, cfg.embed.recognizer)
    if baseline:
        from curate.errors import require_module

        require_module("cleanlab", "bench")
    import dataclasses

    from flows.bench_flow import bench_flow, print_table

    summary = bench_flow(faces=faces, out=out, seeds=seed_list, noise=dataclasses.asdict(noise), config=cfg.to_dict(),
                         resources=res.__dict__, score_config=score_cfg.__dict__,
                         holdout=None if holdout < 0 else holdout, baseline=baseline, sweeps=not no_sweeps,
                         progress=not kw["no_progress"])
    click.echo(json.dumps(summary, indent=1) if kw["as_json"] else print_table(summary))


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@click.option("--format", "input_format", type=click.Choice(["folder", "rec", "tsv", "tar", "parquet"]), default=None,
              help="Input kind (default: guessed from INPUT).")
@click.option("--holdout", default=0.2, show_default=True, help="Share of the identities held out of training, to verify on.")
@click.option("--epochs", default=30, show_default=True, help="Epochs of the projection on frozen embeddings.")
@click.option("--recipe", type=click.Choice(["curated", "k3"]), default="curated", show_default=True,
              help="The model of round 1: trained on the curated faces, or the paper's K=3->1 on the raw crawl.")
@click.option("--seed", default=0, show_default=True, help="Seed of the held-out people and of training.")
@click.option("--truth", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A benchmark truth (curate bench: seed-<s>/run/truth.parquet) to report purity per round.")
@_run_options
@_writer
def loop(input_path, input_format, holdout, epochs, recipe, seed, truth, **kw):
    """Close the loop, measured: curate INPUT (round 0); train the same recipe (a projection on
    the frozen embeddings, with a margin head) on every face of the raw crawl and on the curated
    faces, and verify both on people held out of training; export the curated model; re-embed and
    re-score the crawl with it (round 1). OUT/loop.json holds the rounds side by side and the
    verification before/after; `--recognizer chain:OUT/model/projection.onnx` curates new crawls."""
    import dataclasses

    out = kw["out"]
    cfg = _config(kw["detector"], kw["recognizer"], kw["shard_size"], kw["min_face_size"], kw["det_score"],
                  kw["upsample"], kw["det_size"])
    score_cfg = _score_config(**{k: kw[k] for k in SCORE_OPTIONS if k != "calibration"})
    res = Resources(workers=kw["workers"], threads_per_worker=kw["threads"], gpus_per_worker=kw["gpus"],
                    batch_size=kw["batch_size"])
    if not 0 < holdout < 1:
        raise click.BadParameter("in (0, 1)", param_hint="--holdout")
    _preflight(input_path, input_format, {}, os.path.join(out, "round-0"), cfg)
    from curate.errors import require_module

    require_module("torch", "train")
    from flows.loop_flow import loop_flow

    s = loop_flow(input_path=input_path, out=out, config=cfg.to_dict(), resources=res.__dict__,
                  score_config=dataclasses.asdict(score_cfg), input_format=input_format, holdout=holdout, seed=seed,
                  epochs=epochs, recipe=recipe, truth=os.path.abspath(truth) if truth else None,
                  progress=not kw["no_progress"])
    if kw["as_json"]:
        click.echo(json.dumps(s, indent=1))
        return
    v = s["verification"]
    click.echo(f"held out     {v['held_out_people']} people, {v['held_out_faces']} kept faces "
               f"({v['base']['genuine_pairs']} genuine, {v['base']['impostor_pairs']} impostor pairs)")
    for name in ("base", "noisy", "curated"):
        m = v[name]
        label = {"base": "frozen base", "noisy": f"raw crawl ({v['train_faces']['noisy']})",
                 "curated": f"{recipe} ({v['train_faces']['curated']})"}[name]
        tar = m["tar_at_far"]
        click.echo(f"{label:<24} accuracy {m['accuracy']:.4f}  TAR@1e-3 {tar.get('0.001', tar.get(0.001))}  "
                   f"TAR@1e-2 {tar.get('0.01', tar.get(0.01))}")
    for k, r in enumerate(s["rounds"]):
        extra = f", purity {r['purity']}, clean retention {r['clean_retention']}" if "purity" in r else ""
        click.echo(f"round {k}      kept {r['kept']} of {r['images']}{extra}; model {r['model']}")
    click.echo(f"model        {s['model']}  (curate run ... --recognizer chain:{s['model']})")


@main.command("score")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@_score_options
@click.option("--partition-rows", type=click.IntRange(min=1000), default=None,
              help="Images per scoring partition (default 250000, about 1.5 GB of memory a task). A run with more is "
                   "scored partition by partition on Ray (RAY_ADDRESS joins a cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def score_cmd(out, as_json, partition_rows, **kw):
    """Score and select the run in OUT again with new thresholds: label noise (sub-center
    dominance), duplicates, merged identities, quality. Uses the stored embeddings: no model runs.
    Writes OUT/scores, OUT/identities, OUT/curated for this threshold set and updates the views.
    A scoring killed part way resumes where it stopped when run again with the same options."""
    from curate.scoring import score_run
    from flows.ray_exec import ray_map

    s = score_run(out, _score_config(**kw), kw.get("calibration"), mapper=ray_map, part_rows=partition_rows)
    _print_curation(s, as_json)


def _print_curation(s: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    src = s.get("threshold_source") or {}

    def th(key, fmt):
        v = s.get(key)
        return "n/a" if v is None else f"{fmt.format(v)} ({src.get(key, '?')})"

    click.echo(f"curation     {s['kept']} of {s['images']} images kept (scores {s['score_digest']}, {s['score_seconds']} s)")
    click.echo(f"thresholds   far angle {th('far_angle', '{:.1f} deg')}, duplicate cos {th('dup_cos', '{:.3f}')}, "
               f"merge cos {th('merge_cos', '{:.3f}')}")
    for reason, n in s["reasons"].items():
        click.echo(f"  {reason:<26} {n}")
    click.echo(f"identities   {s['identities']} scored, {s['identities_kept']} kept, {s['identities_dropped']} dropped, "
               f"{s['identities_review']} for review, {s['identities_merged']} merge candidates")
    for w in s.get("warnings", []):
        click.secho(f"WARNING      {w}", fg="yellow", err=True)


@main.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(out, as_json):
    """Show how far the run in OUT got: shards done, rows kept and rejected by reason."""
    from curate.io.shards import ShardStore

    _print_summary(ShardStore.of(out).summary(), as_json)


def _print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(s, indent=1))
        return
    click.echo(f"input        {s['input']}")
    click.echo(f"output       {s['out']}  (config {s['digest']})")
    click.echo(f"shards       {s['shards_done']}/{s['shards']} done")
    click.echo(f"images       {s['images']} of {s['items_planned']} planned; faces found {s['faces']}")
    if "identities" in s:
        click.echo(f"identities   {s['identities']} in, {s['identities_kept']} with kept images")
    click.echo(f"kept         {s['kept']}   rejected {s['rejected']}")
    for reason, n in s["reasons"].items():
        click.echo(f"  {reason:<22} {n}")
    if "this_run" in s:
        r = s["this_run"]
        click.echo(f"this run     {r['images']} images in {r['seconds']} s = {r['images_per_s']} img/s")
    if s.get("worker_seconds"):
        click.echo("worker s     " + "  ".join(f"{k} {v}" for k, v in s["worker_seconds"].items()))
    if "curation" in s:
        _print_curation(s["curation"], False)
    if "audit" in s:
        _print_audit(s["audit"])


def _print_audit(a: dict) -> None:
    click.echo(f"audits       {len(a['written'])} questions -> {a['dir']}")
    why: dict[str, list[str]] = {}
    for name, msg in a["skipped"].items():
        why.setdefault(msg.partition(": ")[2].split(". ")[0], []).append(name)
    for reason, names in why.items():
        click.echo(f"  skipped {', '.join(names)}: {reason}")
    if "report" in a:
        click.echo(f"report       {a['report']}")


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
    overrides = _name_values(params, "--param")
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
    bound = _name_values(params, "--param") or None
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
@_writer
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
        click.echo(f"against      {path}: {len(ev['name'])} faces; {len(f)} crawl faces match, "
                   f"{len(set(i['identity'].to_pylist()))} identities leaked")
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


@main.command("export")
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["rec", "webdataset", "folders"]), default="rec", show_default=True,
              help="rec: MXNet train.rec/.idx/property (arcface_torch); webdataset: tar shards; folders: identity/image.jpg.")
@click.option("--min-quality", type=click.FloatRange(0, 100),
              help="Only kept faces with quality (reference percentile, 0-100) at least this.")
@click.option("--shard-size", default=10000, show_default=True, help="Images per WebDataset tar shard.")
@click.option("--scores", "scores", default=None, metavar="DIGEST",
              help="Which scoring (digest or a prefix, see OUT/scores/; default: the current one).")
@click.option("--exclude-leaked", is_flag=True,
              help="Leave out the identities `curate leakage` found in an evaluation set (OUT/leakage/).")
def export_cmd(out, dest, fmt, min_quality, shard_size, scores, exclude_leaked):
    """Export the kept faces of the run in OUT (aligned 112x112 crops, grouped by identity, labels
    0..C-1) to DEST for a trainer. DEST must be new or empty; it appears complete or not at all."""
    from curate.io.export import export

    exclude = None
    if exclude_leaked:
        from curate.leakage import leaked_identities

        exclude = sorted(leaked_identities(out))
        click.echo(f"excluded     {len(exclude)} identities found in evaluation sets")
    r = export(out, dest, fmt, min_quality, shard_size, scores=scores, exclude=exclude)
    click.echo(f"exported     {r['images']} images of {r['identities']} identities as {r['format']} -> {r['dest']}")


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


SUPERVISED = {"run", "demo", "bench", "loop", "score", "retrain"}  # commands that start Ray or Prefect


def entry() -> None:
    """The ``curate`` executable: the commands that start Ray and Prefect run supervised (see
    curate.supervise: Ctrl-C exits at once, with one line), the others in this process."""
    from curate.supervise import CHILD, supervised

    args = sys.argv[1:]
    command = next((a for a in args if not a.startswith("-")), None)
    if command in SUPERVISED and not os.environ.get(CHILD) and "--help" not in args and "-h" not in args:
        sys.exit(supervised(args))
    main()


if __name__ == "__main__":
    main()
