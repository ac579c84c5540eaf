"""Export a trained backbone to ONNX with a model card, in the form the pipeline's ``onnx:``
recognizer loads: input ``data`` [N, 3, 112, 112] float (RGB, (x - 127.5) / 127.5, as the card
says), output ``fc1`` [N, D] raw features (their L2 norm is the quality signal; the pipeline
normalises). The card's sha256 covers every file the model loads (``model.onnx.data`` too); its
calibration, measured on identities the training never saw, is curate.calibration.calibrate_held_out
over ``raw_features``."""

from __future__ import annotations

import os

import numpy as np
import torch

from models.cards import card_path, file_sha256, files_sha256, write_card
from models.eval import to_tensor


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
    write_card(card_path(path), card)
    return card


@torch.no_grad()
def raw_features(backbone, imgs: list[np.ndarray], device: str, batch: int = 128) -> np.ndarray:
    """(N, D) raw features (before normalisation) of RGB uint8 crops (112, 112, 3)."""
    backbone.eval()
    out = [backbone(torch.stack([to_tensor(i) for i in imgs[s : s + batch]]).to(device)).float().cpu().numpy()
           for s in range(0, len(imgs), batch)]
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)
