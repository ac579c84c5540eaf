"""Export a trained backbone to ONNX with a model card, in the form the pipeline's ``onnx:``
recognizer loads: input ``data`` [N, 3, 112, 112] float (RGB, (x - 127.5) / 127.5, which
insightface's ArcFaceONNX applies), output ``fc1`` [N, D] raw features (their L2 norm is the
quality signal; the pipeline normalises)."""

from __future__ import annotations

import hashlib
import json
import os

import torch


def export_onnx(backbone: torch.nn.Module, path: str, card: dict | None = None) -> dict:
    backbone = backbone.eval().cpu()
    x = torch.randn(2, 3, 112, 112)
    torch.onnx.export(
        backbone, (x,), path, dynamo=True, input_names=["data"], output_names=["fc1"],
        dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=65536)}}, optimize=True, verbose=False,
    )
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with torch.no_grad():
        dim = int(backbone(x).shape[1])
    card = {
        "name": os.path.splitext(os.path.basename(path))[0],
        "task": "recognition",
        "file": os.path.basename(path),
        "sha256": sha,
        "input": {"shape": ["N", 3, 112, 112], "layout": "NCHW", "color": "RGB", "mean": 127.5, "std": 127.5,
                  "alignment": "arcface 5-point template, 112x112"},
        "output": {"name": "fc1", "dim": dim, "normalised": False},
        **(card or {}),
    }
    with open(os.path.splitext(path)[0] + ".card.json", "w") as f:
        json.dump(card, f, indent=1)
    return card
