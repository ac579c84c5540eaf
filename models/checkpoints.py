"""Official MagFace and AdaFace checkpoints, loaded onto the project's own iResNet.

``--recognizer adaface:PATH.ckpt``  AdaFace's released IR-18/34/50/101 checkpoints: a PyTorch
    Lightning checkpoint whose ``state_dict`` holds ``model.input_layer.*``, ``model.body.<k>.*``
    (``res_layer``, ``shortcut_layer``), ``model.output_layer.*`` and the margin head's
    ``head.kernel`` (ignored). Input BGR, (x / 255 - 0.5) / 0.5. The network returns the unit
    feature and its norm; their product, the raw feature, is what we keep.
``--recognizer magface:PATH.pth``   MagFace's released iResNet checkpoints: ``state_dict`` with the
    backbone under ``features.module.*`` or ``module.features.*`` (insightface's iresnet names:
    ``conv1``, ``layer<s>.<b>.bn1``, ...) and the MagLinear head's ``fc.weight`` (ignored). Input
    BGR, x / 255. The raw feature's magnitude is the quality.

Files are read with ``torch.load(weights_only=True)`` (no code runs from the file); the keys are
renamed onto :class:`models.backbones.iresnet.IResNet` and loaded strictly, so a file in any other
layout is a ModelError that lists the missing and unexpected keys. The depth is read from the keys.
"""

from __future__ import annotations

import re

import numpy as np

from curate.errors import ModelError, require_module

# name -> (input color, mean, std) of the released models' preprocessing, and the BN epsilon
LAYOUTS = {
    "adaface": {"color": "BGR", "mean": 127.5, "std": 127.5, "eps": 1e-5, "subsample_shortcut": True},
    "magface": {"color": "BGR", "mean": 0.0, "std": 255.0, "eps": 2e-5, "subsample_shortcut": False},
}
BODY = {"bn1": 0, "conv1": 1, "bn2": 2, "prelu": 3, "conv2": 4, "bn3": 5}  # insightface block -> our body.<i>
STEM = {"conv1": 0, "bn1": 1, "prelu": 2}


def read_state(path: str) -> dict:
    """The checkpoint's tensors, read without running code from the file."""
    torch = require_module("torch", "train")
    import argparse

    try:  # Lightning pickles its hyper-parameters, often an argparse.Namespace: allowed, nothing else
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # UnpicklingError, a zip/pickle that is not a checkpoint, ...
        raise ModelError(f"{path}: not loadable with torch.load(weights_only=True): {str(exc).splitlines()[0]}. "
                         "Re-save just its tensors: torch.save(torch.load(p)['state_dict'], 'weights.ckpt')") from exc
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"{path}: holds no state dict (a dict of tensors, or one under 'state_dict')")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _stages(blocks: dict[int, int]) -> list[int]:
    """[blocks per stage] from {stage index: highest block index}."""
    return [blocks[s] + 1 for s in sorted(blocks)]


def _adaface(state: dict) -> tuple[dict, list[int], int]:
    """AdaFace keys -> ours, the blocks per stage, the embedding size."""
    body = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.body\.(\d+)\.", k))})
    # a stage starts where the width changes: there the shortcut is a convolution with weights,
    # except the first stage, whose shortcut only subsamples
    starts = [0] + [b for b in body if b and f"model.body.{b}.shortcut_layer.0.weight" in state]
    stage_of = {b: (sum(b >= s for s in starts) - 1, b - max(s for s in starts if s <= b)) for b in body}
    out = {}
    for k, v in state.items():
        if not k.startswith("model."):
            continue  # the margin head (head.kernel), Lightning's extras
        name = k[len("model."):]
        if m := re.match(r"input_layer\.(\d+)\.(.+)", name):
            name = f"stem.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"body\.(\d+)\.res_layer\.(\d+)\.(.+)", name):
            s, b = stage_of[int(m.group(1))]
            name = f"stages.{s}.{b}.body.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"body\.(\d+)\.shortcut_layer\.(\d+)\.(.+)", name):
            s, b = stage_of[int(m.group(1))]
            name = f"stages.{s}.{b}.downsample.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"output_layer\.(\d+)\.(.+)", name):
            name = {"0": "bn2", "3": "fc", "4": "features"}.get(m.group(1), f"output_layer.{m.group(1)}") + "." + m.group(2)
        out[name] = v
    layers = {}
    for b, (s, i) in stage_of.items():
        layers[s] = max(layers.get(s, 0), i)
    dim = state["model.output_layer.3.weight"].shape[0] if "model.output_layer.3.weight" in state else 512
    return out, _stages(layers), int(dim)


def _magface(state: dict) -> tuple[dict, list[int], int]:
    """MagFace (insightface iresnet) keys -> ours, the blocks per stage, the embedding size."""
    prefix = next((p for p in ("features.module.", "module.features.", "module.") if any(k.startswith(p) for k in state)), "")
    out, layers = {}, {}
    for k, v in state.items():
        if prefix and not k.startswith(prefix):
            continue  # the MagLinear head (fc.weight beside features), optimiser leftovers
        name = k[len(prefix):]
        if m := re.match(r"(conv1|bn1|prelu)\.(.+)", name):
            name = f"stem.{STEM[m.group(1)]}.{m.group(2)}"
        elif m := re.match(r"layer(\d+)\.(\d+)\.(bn1|conv1|bn2|prelu|conv2|bn3)\.(.+)", name):
            s, b = int(m.group(1)) - 1, int(m.group(2))
            layers[s] = max(layers.get(s, 0), b)
            name = f"stages.{s}.{b}.body.{BODY[m.group(3)]}.{m.group(4)}"
        elif m := re.match(r"layer(\d+)\.(\d+)\.downsample\.(.+)", name):
            name = f"stages.{int(m.group(1)) - 1}.{m.group(2)}.downsample.{m.group(3)}"
        out[name] = v
    dim = out["fc.weight"].shape[0] if "fc.weight" in out else 512
    return out, _stages(layers), int(dim)


def load_checkpoint(path: str, kind: str):
    """(IResNet in eval mode, info) for an official ``kind`` checkpoint ('adaface' or 'magface')."""
    torch = require_module("torch", "train")
    from models.backbones.iresnet import IResNet

    layout = LAYOUTS[kind]
    state = read_state(path)
    mapped, layers, dim = (_adaface if kind == "adaface" else _magface)(state)
    if len(layers) != 4 or not all(layers):
        raise ModelError(f"{path}: not a {kind} iResNet checkpoint (found no 4-stage backbone in its keys; "
                         f"first keys: {', '.join(list(state)[:5])})")
    width = mapped["stem.0.weight"].shape[0] if "stem.0.weight" in mapped else 64
    net = IResNet(layers, embedding_size=dim, width=int(width), eps=layout["eps"],
                  subsample_shortcut=layout["subsample_shortcut"])
    want = net.state_dict()
    if kind == "adaface":  # its last BatchNorm1d has no affine weights: the identity
        for k in ("features.weight", "features.bias"):
            mapped.setdefault(k, torch.ones_like(want[k]) if k.endswith("weight") else torch.zeros_like(want[k]))
    missing = sorted(set(want) - set(mapped))
    unexpected = sorted(set(mapped) - set(want))
    shapes = sorted(k for k in set(want) & set(mapped) if tuple(want[k].shape) != tuple(mapped[k].shape))
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        raise ModelError(f"{path}: its keys do not fit a {kind} iResNet {layers}: "
                         + "; ".join(f"{what} {len(keys)}: {few(keys)}" for what, keys in
                                     (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys))
    net.load_state_dict(mapped, strict=True)
    net.eval()
    depth = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 14, 3): 50, (3, 13, 30, 3): 100}.get(tuple(layers), sum(layers) * 2 + 2)
    return net, {"arch": f"ir{depth}", "layers": layers, "dim": dim, **{k: layout[k] for k in ("color", "mean", "std")}}


class TorchRecognizer:
    """An official MagFace/AdaFace checkpoint run in torch (CPU, or CUDA with --gpus). Returns the
    raw feature (the unit feature times its norm), like every recognizer."""

    template, size = "arcface", 112

    def __init__(self, path: str, kind: str, threads: int = 0, gpu: bool = False, batch_size: int = 32):
        torch = require_module("torch", "train")
        from models.cards import card_for, verified_sha256

        found = card_for(path)
        self.card = found[0] if found else {}
        self.sha256 = verified_sha256(path, None, self.card or None)
        self._net, info = load_checkpoint(path, kind)
        self.dim, self.bgr, self.mean, self.std = info["dim"], info["color"] == "BGR", info["mean"], info["std"]
        self.id = f"{self.card.get('name') or kind + '-' + info['arch']}@{self.sha256[:12]}"
        self.batch_size = batch_size
        if threads:
            torch.set_num_threads(threads)
        self._device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        self._net.to(self._device)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from models.detectors import to_input

        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for s in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(to_input(crops[s : s + self.batch_size], self.bgr, self.mean, self.std))
                out.append(self._net(x.to(self._device)).float().cpu().numpy())
        return np.concatenate(out)
