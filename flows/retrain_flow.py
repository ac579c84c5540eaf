"""The ``retrain`` Prefect flow: train on curated shards -> evaluate on verification pairs ->
export ONNX + model card (the next curation round's recognizer). Training retries resume from the
last epoch's checkpoint."""

from __future__ import annotations

import json
import os

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from curate.calibration import calibrate_held_out
from models.data import shard_files
from models.eval import evaluate_pairs, load_bin, load_pairs_txt, read_image_bytes
from models.export import export_onnx, raw_features
from models.train import TrainConfig, train


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train_task(shards: str, out: str, config: dict, device: str | None, progress: bool = False) -> dict:
    return train(shards, os.path.join(out, "train"), TrainConfig(**config), device=device, progress=progress)


@task(cache_policy=NO_CACHE)  # its input holds a torch module
def evaluate_task(result: dict, bins: list[str], pairs: list[tuple[str, str]]) -> dict:
    metrics = {}
    for path in bins:
        images, same = load_bin(path)
        metrics[os.path.basename(path)] = evaluate_pairs(result["backbone"], images, same, device=result["device"]).as_dict()
    for pairs_txt, root in pairs:
        paths, same = load_pairs_txt(pairs_txt, root)
        images = [read_image_bytes(p) for p in paths]
        metrics[os.path.basename(pairs_txt)] = evaluate_pairs(result["backbone"], images, same, device=result["device"]).as_dict()
    return metrics


@task(cache_policy=NO_CACHE)
def export_task(result: dict, out: str, config: dict, metrics: dict, shards: str) -> dict:
    from models.cards import detector_name

    backbone, device = result["backbone"], result["device"]
    cal = calibrate_held_out(lambda imgs: raw_features(backbone, imgs, device), shard_files(shards), result["held_out"])
    extra = {
        # the card describes the weights beside it: the config of the checkpoint that was exported
        "backbone": config["backbone"], "head": config["head"], "head_kwargs": config.get("head_kwargs", {}),
        "training": config, "trained_on": os.path.abspath(shards), "num_classes": result["num_classes"],
        "steps": result["steps"], "held_out_identities": len(result["held_out"]),
        "evaluation": metrics, "licence": "same terms as the training data",
    }
    if cal:
        extra["calibrations"] = {detector_name(cal["reference"]["detector"] or ""): cal}
    return export_onnx(result["backbone"], os.path.join(out, "model.onnx"), extra)


@flow(name="retrain")
def retrain_flow(shards: str, out: str, config: dict, bins: list[str] | None = None,
                 pairs: list[tuple[str, str]] | None = None, device: str | None = None, progress: bool = False) -> dict:
    result = train_task(shards, out, config, device, progress)
    metrics = evaluate_task(result, bins or [], pairs or [])
    card = export_task(result, out, config, metrics, shards)
    losses = [h["loss"] for h in result["history"]]
    ips = result["images_per_s"]
    summary = {"out": os.path.abspath(out), "model": os.path.join(os.path.abspath(out), "model.onnx"),
               "steps": result["steps"], "classes": result["num_classes"], "device": result["device"],
               "images_per_s": round(ips, 1) if ips else None, "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "evaluation": metrics, "sha256": card["model_sha256"],
               "held_out_identities": len(result["held_out"]),
               "calibrated": any(not c.get("collapsed") for c in (card.get("calibrations") or {}).values()),
               "metrics": os.path.join(os.path.abspath(out), "train", "metrics.csv"),
               "warnings": result["warnings"] + [f"calibration: {w}" for c in (card.get("calibrations") or {}).values()
                                                 for w in c.get("warnings", [])]}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
