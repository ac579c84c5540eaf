"""``curate retrain``, ``curate calibrate``, ``curate loop`` and ``curate bench``: models trained,
calibrated and measured."""

from __future__ import annotations

import copy
import json
import os

import click

from curate.cli.base import main, name_values, writer
from curate.cli.crawl import preflight
from curate.cli.options import configs, input_format, run_options
from curate.config import DetectConfig, EmbedConfig, RunConfig
from curate.errors import CurateError
from curate.sample import shared_faces


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

    cfg = TrainConfig(backbone=backbone, head=head, head_kwargs=name_values(head_arg, "--head-arg", typed=True), embedding_size=embedding_size,
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
@click.option("--degraded", default=200, show_default=True, help="Photos degraded every way curate.degrade knows (blur, thumbnails, occlusion, low light...) to fit quality.")
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
    # a deep copy: the recognizer's card is the registry's cached one, which other runs in this
    # process read (a shallow copy shared its calibrations, so this reference became theirs)
    card = read_card(card_out) if os.path.exists(card_out) else \
        copy.deepcopy({k: v for k, v in rec.card.items() if not k.startswith("_")})
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
    from curate.stats import shown

    n_gen = cal["reference"]["genuine_pairs"]
    click.echo(f"verification TAR@FAR 1e-3 {shown(v['tar_at_far_0.001'], n_gen)}, 1e-4 {shown(v['tar_at_far_0.0001'], n_gen)} "
               f"({n_gen:,} same-person pairs, {cal['reference']['impostor_pairs']:,} impostor pairs)")
    m = q["match"]
    click.echo(f"quality      the chance of matching, from {' + '.join(m['signals'])}: error-versus-discard {m['edc']} on "
               f"held-out people (det_score alone {m['edc_alone'].get('det_score')}, norm alone {m['edc_alone'].get('norm')}); "
               f"unidentifiable below quality {m['unidentifiable_below']} (a face that does not match: {m.get('unmatched_below')})")
    for w in cal.get("warnings", []):
        click.echo(f"WARNING      {w}", err=True)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True))
@input_format
@click.option("--holdout", default=0.2, show_default=True, help="Share of the identities held out of training, to verify on.")
@click.option("--epochs", default=30, show_default=True, help="Epochs of the projection on frozen embeddings.")
@click.option("--recipe", type=click.Choice(["curated", "k3"]), default="curated", show_default=True,
              help="The model of round 1: trained on the curated faces, or the paper's K=3->1 on the raw crawl.")
@click.option("--seed", default=0, show_default=True, help="Seed of the held-out people and of training.")
@click.option("--truth", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A benchmark truth (curate bench: seed-<s>/run/truth.parquet) to report purity per round.")
@run_options
@writer
def loop(input_path, input_format, holdout, epochs, recipe, seed, truth, **kw):
    """Close the loop, measured: curate INPUT (round 0); train the same recipe (a projection on
    the frozen embeddings, with a margin head) on every face of the raw crawl and on the curated
    faces, and verify both on people held out of training; export the curated model; re-embed and
    re-score the crawl with it (round 1). OUT/loop.json holds the rounds side by side and the
    verification before/after; `--recognizer chain:OUT/model/projection.onnx` curates new crawls."""
    import dataclasses

    out = kw["out"]
    cfg, res, score_cfg = configs(kw)
    if not 0 < holdout < 1:
        raise click.BadParameter("in (0, 1)", param_hint="--holdout")
    preflight(input_path, input_format, {}, os.path.join(out, "round-0"), cfg)
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
    from curate.stats import shown

    v = s["verification"]
    click.echo(f"held out     {v['held_out_people']} people, {v['held_out_faces']} kept faces "
               f"({v['base']['genuine_pairs']} genuine, {v['base']['impostor_pairs']} impostor pairs)")
    for name in ("base", "noisy", "curated"):
        m = v[name]
        label = {"base": "frozen base", "noisy": f"raw crawl ({v['train_faces']['noisy']})",
                 "curated": f"{recipe} ({v['train_faces']['curated']})"}[name]
        tar, n = m["tar_at_far"], m["genuine_pairs"]
        click.echo(f"{label:<24} accuracy {shown(m['accuracy'], n + m['impostor_pairs'])}  "
                   f"TAR@1e-3 {shown(tar.get('0.001', tar.get(0.001)), n)}  TAR@1e-2 {shown(tar.get('0.01', tar.get(0.01)), n)}")
    for k, r in enumerate(s["rounds"]):
        extra = f", purity {r['purity']}, clean retention {r['clean_retention']}" if "purity" in r else ""
        click.echo(f"round {k}      kept {r['kept']} of {r['images']}{extra}; model {r['model']}")
    click.echo(f"model        {s['model']}  (curate run ... --recognizer chain:{s['model']})")
    click.echo(f"report       {s['report']}")
    for w in s.get("warnings", []):
        click.echo(f"WARNING      {w}", err=True)


@main.command()
@click.option("--faces", type=click.Path(exists=True, file_okay=False), default=None,
              help="Identity-folder tree of real faces to build crawls from (default ../shared/data/faces).")
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds of the crawls, comma separated (tuning seeds).")
@click.option("--holdout", type=int, default=7, show_default=True,
              help="A seed reported apart, never to be tuned on (-1: none).")
@click.option("--flip", default=0.05, show_default=True, help="Closed-set label flips, share of clean photos.")
@click.option("--distractor", default=0.03, show_default=True, help="Open-set distractors, share of clean photos.")
@click.option("--duplicate", default=0.05, show_default=True, help="Copies (re-encoded, resized, mirrored, cropped, "
              "captioned), share of clean photos.")
@click.option("--group", default=0.03, show_default=True, help="Group photos (the person among 1-3 others), share of "
              "clean photos.")
@click.option("--unidentifiable", default=0.03, show_default=True, help="Degraded copies, share of clean photos.")
@click.option("--nonface", default=0.01, show_default=True, help="Photos without a face, share of clean photos.")
@click.option("--split", default=2, show_default=True, help="People crawled under two labels (those with 6+ photos).")
@click.option("--min-photos", default=4, show_default=True, help="People with fewer photos are left out.")
@click.option("--open-set", default=0.15, show_default=True, help="Share of people kept out of the set (distractor sources).")
@click.option("--max-photos", default=20, show_default=True, help="Photos per person at most.")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave out identity folders matching this pattern (fnmatch; repeatable), e.g. sources with "
                   "label noise of their own that the truth would count as clean.")
@click.option("--baseline", is_flag=True, help="Also run cleanlab's find_label_issues (the [bench] extra; AGPL).")
@click.option("--no-sweeps", is_flag=True, help="Skip the threshold sweeps.")
@run_options
@writer
def bench(faces, seeds, holdout, flip, distractor, duplicate, group, unidentifiable, nonface, split, min_photos, open_set,
          max_photos, exclude, baseline, no_sweeps, **kw):
    """Benchmark the curation on real faces: build MS1MV0-style noisy crawls (label flips, open-set
    distractors, re-saved copies, a person under two labels, degraded copies, non-faces) with the truth
    recorded per file, curate each like `curate run`, and score the result against the truth: purity,
    clean retention, precision and recall of every flag, error-versus-discard of each quality signal,
    threshold sweeps; mean and spread over seeds, and a held-out seed apart. OUT is the benchmark
    directory (resumable): OUT/seed-<s>/run is each seed's curate run, with the benchmark in its report."""
    from curate.benchmark import Noise

    out = kw["out"]

    if faces is None:
        faces = str(shared_faces())
        if not os.path.isdir(faces):
            raise click.BadParameter(f"no {faces}; pass --faces DIR (identity folders of real faces)")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{seeds!r}: comma-separated integers", param_hint="--seeds") from None
    noise = Noise(flip=flip, distractor=distractor, duplicate=duplicate, group=group, unidentifiable=unidentifiable,
                  nonface=nonface,
                  split=split, open_set=open_set, min_photos=min_photos, max_photos=max_photos, exclude=tuple(exclude))
    cfg, res, score_cfg = configs(kw)
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
