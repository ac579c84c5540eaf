"""Face verification evaluation: accuracy (10-fold, best threshold, as LFW reports it) and
TAR@FAR, on LFW ``pairs.txt`` lists or insightface ``.bin`` files (parsed safely: no object in the
file can run code). torch is imported only to run a backbone: reading the sets and scoring pairs
need none (``curate leakage --against x.bin`` runs without it)."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np

from curate.stats import tar_at_far


@dataclass
class Verification:
    accuracy: float  # mean over folds
    accuracy_std: float
    threshold: float  # mean best cosine threshold over folds
    tar_at_far: dict[float, float]

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "accuracy_std": self.accuracy_std, "threshold": self.threshold,
                "tar_at_far": {str(k): v for k, v in self.tar_at_far.items()}}


def _best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The cosine threshold (same if sim >= t) with the best accuracy on these pairs, placed midway
    between consecutive sorted similarities so that it generalises to held-out pairs."""
    order = np.argsort(sims, kind="stable")
    s, y = sims[order], same[order]
    # candidate i: threshold between s[i-1] and s[i]; i = 0 accepts everything, i = n nothing
    pos_at_or_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    acc = pos_at_or_above + neg_below
    distinct = np.concatenate([[True], s[1:] > s[:-1], [True]])  # a threshold cannot split equal values
    i = int(np.argmax(np.where(distinct, acc, -1)))
    if i == 0:
        return float(s[0] - 1e-6)
    if i == len(s):
        return float(s[-1] + 1e-6)
    return float((s[i - 1] + s[i]) / 2)


def verify(sims: np.ndarray, same: np.ndarray, folds: int = 10, fars=(1e-3, 1e-2)) -> Verification:
    """sims (P,) cosine similarities of pairs, same (P,) bool. Threshold picked on 9 folds, scored on the 10th."""
    sims, same = np.asarray(sims, np.float64), np.asarray(same, bool)
    idx = np.array_split(np.arange(len(sims)), folds)
    accs, thrs = [], []
    for k in range(folds):
        test = idx[k]
        train = np.concatenate([idx[j] for j in range(folds) if j != k])
        t = _best_threshold(sims[train], same[train])
        accs.append(float(((sims[test] >= t) == same[test]).mean()))
        thrs.append(t)
    return Verification(float(np.mean(accs)), float(np.std(accs)), float(np.mean(thrs)),
                        {f: tar_at_far(sims[same], sims[~same], f) for f in fars})


class _NoGlobals(pickle.Unpickler):
    """Only plain containers, bytes, numbers and bools: every class or function lookup is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an evaluation file")


def load_bin(path: str) -> tuple[list[bytes], np.ndarray]:
    """insightface ``.bin``: a pickle of (list of encoded images, list of issame). Returns
    (2P encoded images, (P,) bool)."""
    with open(path, "rb") as f:
        try:
            bins, issame = _NoGlobals(f, encoding="bytes").load()
        except (pickle.UnpicklingError, ValueError, EOFError, TypeError) as exc:
            raise ValueError(f"{path}: not an insightface verification .bin ({exc})") from exc
    bins = [bytes(b) for b in bins]
    issame = np.asarray(issame, bool)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs")
    return bins, issame


def save_bin(path: str, images: list[bytes], issame) -> None:
    with open(path, "wb") as f:
        pickle.dump((list(images), [bool(x) for x in issame]), f, protocol=4)


def load_pairs_txt(path: str, root: str) -> tuple[list[str], np.ndarray]:
    """LFW ``pairs.txt``: optional header "folds n", then "name i j" (same person) or
    "name1 i name2 j" (different); images at root/name/name_%04d.jpg."""
    paths, same = [], []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 3:
                paths += [os.path.join(root, p[0], f"{p[0]}_{int(p[1]):04d}.jpg"),
                          os.path.join(root, p[0], f"{p[0]}_{int(p[2]):04d}.jpg")]
                same.append(True)
            elif len(p) == 4:
                paths += [os.path.join(root, p[0], f"{p[0]}_{int(p[1]):04d}.jpg"),
                          os.path.join(root, p[2], f"{p[2]}_{int(p[3]):04d}.jpg")]
                same.append(False)
    return paths, np.asarray(same, bool)


def embed_aligned(backbone, images: list[np.ndarray], batch_size: int = 128,
                  device: str = "cpu", flip: bool = True) -> np.ndarray:
    """(N) aligned 112x112 RGB uint8 -> (N, D) unit embeddings of a torch ``backbone``. With
    ``flip``, the raw features of the image and its mirror are summed before normalising
    (norm-weighted fusion, MagFace+ style)."""
    import torch
    import torch.nn.functional as F

    backbone.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = torch.stack([to_tensor(im) for im in images[s : s + batch_size]]).to(device)
            f = backbone(x)
            if flip:
                f = f + backbone(torch.flip(x, dims=[3]))
            out.append(F.normalize(f.float(), dim=1).cpu())
    return torch.cat(out).numpy()


def evaluate_pairs(backbone, encoded: list[bytes], same: np.ndarray, device="cpu", folds=10) -> Verification:
    """Encoded aligned images (pairs consecutive) -> verification metrics."""
    imgs = [_aligned(decode_image(b)) for b in encoded]
    emb = embed_aligned(backbone, imgs, device=device)
    sims = (emb[0::2] * emb[1::2]).sum(1)
    return verify(sims, same, folds=folds)


def to_tensor(rgb):
    """(H, W, 3) RGB uint8 -> (3, H, W) float tensor, (x - 127.5) / 127.5: the backbones' input."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().sub_(127.5).div_(127.5)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) RGB uint8."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _aligned(img: np.ndarray) -> np.ndarray:
    if img.shape[:2] != (112, 112):
        raise ValueError(f"evaluation images must be aligned 112x112 crops, got {img.shape[:2]}")
    return img


def read_image_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()

