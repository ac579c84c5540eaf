"""The ``loop`` Prefect flow: curate (round 0) -> train the same recipe on the raw crawl and on the
curated faces, verify both on held-out people -> export the curated model -> re-embed and re-score
the crawl with it (round 1). OUT/round-0, OUT/model, OUT/round-1, OUT/loop.json."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from curate import loop as L
from curate.files import write_json
from flows.curate_flow import curate_flow


@task(cache_policy=NO_CACHE)
def train_and_compare(run: str, model_dir: str, holdout: float, seed: int, epochs: int, recipe: str) -> dict:
    t = L.faces(run)  # read once for both
    metrics, proj, held = L.compare(run, holdout, seed, epochs, recipe, t=t)
    card = L.export_projection(proj, os.path.join(model_dir, "projection.onnx"), run, held, seed, t=t)
    write_json(os.path.join(model_dir, "verification.json"), metrics)
    warnings = [f"the round-1 model's card: {w}" for c in card["calibrations"].values() for w in c.get("warnings", [])]
    if metrics["base"]["impostor_pairs"] < 10_000:
        warnings.append(f"verification rests on {metrics['base']['impostor_pairs']:,} impostor pairs of "
                        f"{metrics['held_out_people']} held-out people; TAR at FAR 1e-3 needs 10,000 (10 impostors above "
                        "its threshold): hold out more people (--holdout) or read the figures as rough")
    return {"verification": metrics, "model": os.path.join(model_dir, "projection.onnx"), "base": card["base"],
            "warnings": warnings}


@flow(name="loop")
def loop_flow(input_path: str, out: str, config: dict, resources: dict, score_config: dict,
              input_format: str | None = None, input_options: dict | None = None, holdout: float = 0.2, seed: int = 0,
              epochs: int = 30, recipe: str = "curated", truth: str | None = None, progress: bool = False) -> dict:
    out = os.path.abspath(out)
    r0 = os.path.join(out, "round-0")
    curate_flow(input_path=input_path, out=r0, config=config, resources=resources, input_format=input_format,
                input_options=input_options, progress=progress, score_config=score_config, audit=False)
    trained = train_and_compare(r0, os.path.join(out, "model"), holdout, seed, epochs, recipe)
    cfg1 = {**config, "embed": {**config["embed"], "recognizer": f"chain:{trained['model']}"}}
    r1 = os.path.join(out, "round-1")
    curate_flow(input_path=input_path, out=r1, config=cfg1, resources=resources, input_format=input_format,
                input_options=input_options, progress=progress, score_config=score_config, audit=False)
    t = pq.read_table(truth) if truth else None
    summary = {"input": os.path.abspath(input_path), "out": out, "model": trained["model"],
               "rounds": [L.round_summary(r0, t), L.round_summary(r1, t)], "verification": trained["verification"],
               "warnings": trained["warnings"]}
    write_json(os.path.join(out, "loop.json"), summary)
    write_json(os.path.join(r1, "loop.json"), summary)  # the round-1 report shows it
    from curate.report import build_report

    summary["report"] = build_report(r1)
    write_json(os.path.join(out, "loop.json"), summary)
    return summary
