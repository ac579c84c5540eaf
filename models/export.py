"""Export a trained backbone to ONNX with a model card, in the form the pipeline's ``onnx:``
recognizer loads: input ``data`` [N, 3, 112, 112] float (RGB, (x - 127.5) / 127.5, as the card
says), output ``fc1`` [N, D] raw features (their L2 norm is the quality signal; the pipeline
normalises). The card's sha256 covers every file the model loads (``model.onnx.data`` too), and its
calibration is measured on identities the training never saw (``calibrate_held_out``)."""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from models.cards import file_sha256, files_sha256, write_card
from models.data import decode_crop, shard_files, to_tensor


def export_onnx(backbone: torch.nn.Module, path: str, card: dict | None = None) -> dict:
    from models import runtime

    backbone = backbone.eval().cpu()
    x = torch.randn(2, 3, 112, 112)
    torch.onnx.export(
        backbone, (x,), path, dynamo=True, input_names=["data"], output_names=["fc1"],
        dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=65536)}}, optimize=True, verbose=False,
    )
    files = runtime.model_files(path)
    with torch.no_grad():
        dim = int(backbone(x).shape[1])
    card = {
        "name": os.path.splitext(os.path.basename(path))[0],
        "task": "recognition",
        "file": os.path.basename(path),
        "sha256": file_sha256(path),
        "external": {os.path.basename(f): file_sha256(f) for f in files[1:]},
        "model_sha256": files_sha256(files),  # what the model id quotes: every file it loads
        "input": {"shape": ["N", 3, 112, 112], "layout": "NCHW", "color": "RGB", "mean": 127.5, "std": 127.5,
                  "size": 112, "template": "arcface", "alignment": "arcface 5-point template, 112x112"},
        "output": {"name": "fc1", "dim": dim, "normalised": False},
        **(card or {}),
    }
    write_card(os.path.splitext(path)[0] + ".card.json", card)
    return card


def _rows(shards: str, identities: set[str]):
    """Kept rows with a crop of the given identities, from the shards the model was trained on."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cols = ["identity", "crop", "keep", "sha1", "det_score", "sharpness", "detector_id"]
    wanted = pa.array(sorted(identities), pa.string())
    parts = []
    for f in shard_files(shards):
        t = pq.read_table(f, columns=cols)
        ok = pc.and_(pc.and_(pc.fill_null(t["keep"], False), pc.is_valid(t["crop"])), pc.is_in(t["identity"], wanted))
        parts.append(t.filter(ok))
    return pa.concat_tables(parts) if parts else None


@torch.no_grad()
def _raw(backbone, imgs: list[np.ndarray], device: str, batch: int = 128) -> np.ndarray:
    backbone.eval()
    out = [backbone(torch.stack([to_tensor(i) for i in imgs[s : s + batch]]).to(device)).float().cpu().numpy()
           for s in range(0, len(imgs), batch)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def calibrate_held_out(backbone, shards: str, identities: list[str], device: str = "cpu", seed: int = 0) -> dict | None:
    """The calibration (curate.calibration) of a trained backbone on the kept crops of identities
    held out of its training, with re-encoded and mirrored copies as near-duplicates and degraded
    copies to check whether its norm carries quality. None when fewer than 3 identities or 20
    faces are held out."""
    from PIL import Image

    from curate.calibration import _auc, calibrate
    from curate.degrade import DEGRADATIONS

    rows = _rows(shards, set(identities)) if identities else None
    if rows is None or len(rows) < 20 or len(set(rows["identity"].to_pylist())) < 3:
        return None
    rng = np.random.default_rng(seed)
    imgs = [decode_crop(c) for c in rows["crop"].to_pylist()]
    raw = _raw(backbone, imgs, device)
    pick = rng.choice(len(imgs), min(100, len(imgs)), replace=False)
    copies = []
    for i in pick:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(imgs[i][:, ::-1] if rng.random() < 0.5 else imgs[i])).save(
            buf, "JPEG", quality=int(rng.integers(30, 71)))
        copies.append(decode_crop(buf.getvalue()))
    raw_dup = _raw(backbone, copies, device)
    emb = np.concatenate([raw, raw_dup])
    norms = np.linalg.norm(emb, axis=1)
    labels = rows["identity"].to_pylist() + [rows["identity"][int(i)].as_py() for i in pick]
    pairs = np.stack([pick, len(raw) + np.arange(len(pick))], 1)
    pad = lambda c: np.concatenate([rows[c].to_numpy(zero_copy_only=False).astype(np.float64), np.full(len(pick), np.nan)])  # noqa: E731
    cal = calibrate(emb / np.maximum(norms, 1e-12)[:, None], norms, labels, pairs, seed,
                    {"sharpness": pad("sharpness"), "det_score": pad("det_score")},
                    rows["sha1"].to_pylist() + [None] * len(pick))
    # does the norm carry quality? degraded copies of the crops (no detector here: the crop is degraded)
    kinds = [k for k in DEGRADATIONS if k != "extreme_crop"]
    bad = [DEGRADATIONS[k](imgs[i], None, rng) for i in pick for k in kinds]
    bad_norm = np.linalg.norm(_raw(backbone, bad, device), axis=1)
    orig = np.repeat(norms[pick], len(kinds))
    auc = {k: round(_auc(orig[j::len(kinds)], bad_norm[j::len(kinds)]), 3) for j, k in enumerate(kinds)}
    auc["mean"] = round(float(np.mean(list(auc.values()))), 3)
    cal["quality"] = {"signals": ["norm"] if auc["mean"] >= 0.95 else ["norm", "det_score"], "auc": {"norm": auc},
                      "note": "degraded crops of held-out identities (no detection pass)"}
    det = rows["detector_id"][0].as_py()
    cal["cues"]["det_score"]["detector"] = det
    cal["reference"].update({"set": f"{len(set(labels))} identities held out of training", "detector": det})
    return cal
