"""Typed, frozen configuration. Algorithm parameters (which change results and the config hash)
are kept apart from ``Resources`` (which change only speed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

from curate.errors import ConfigError


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def option(default, help: str, flag: str | None = None, **extra):
    """A field the command line exposes: its default and help live here, and the CLI builds its
    option from them (curate.cli.options). ``flag``: the option's name when it is not --<field>;
    ``extra``: ``choices``, ``path`` (an existing file), ``short`` (e.g. '-w')."""
    return field(default=default, metadata={"help": help, "flag": flag, **extra})


@dataclass(frozen=True)
class DecodeConfig:
    max_bytes: int = 64 * 2**20  # larger inputs are `too_large` without being decoded
    max_pixels: int = 64 * 2**20  # decompression-bomb guard, checked from the header
    min_side: int = 16  # smaller images are `too_small_image`

    def __post_init__(self):
        _check(self.max_bytes > 0 and self.max_pixels > 0, "decode limits must be positive")
        _check(self.min_side >= 1, "min_side must be >= 1")


@dataclass(frozen=True)
class DetectConfig:
    """``detector``: 'yunet' (default, MIT), 'scrfd[:file.onnx]' (non-commercial weights), 'dlib-hog',
    'dlib-mmod', or 'insightface:<model.onnx | model dir | pack name>'. See models/detectors.py."""

    detector: str = option("yunet", "yunet (MIT) | scrfd[:file.onnx] (InsightFace, non-commercial) | dlib-hog | "
                           "dlib-mmod | insightface:<model.onnx|model dir|pack name>.")
    min_score: float | None = option(None, "Detector score threshold (default: the detector's own).", flag="--det-score")
    upsample: int = option(1, "dlib: pyramid upsampling (1 finds faces down to ~40 px).")
    det_size: int = option(640, "ONNX detectors: longest input side in px (smaller images run at their own size).")
    max_faces: int = 8  # keep the most prominent faces only (crowd shots)
    min_face_size: float = option(20.0, "Chosen faces smaller than this (px) are rejected as too_small.")
    ambiguity_ratio: float = 0.8  # 2nd face prominence / 1st at or above this -> multi_face_ambiguous

    def __post_init__(self):
        _check(self.max_faces >= 1, "max_faces must be >= 1")
        _check(0.0 < self.ambiguity_ratio <= 1.0, "ambiguity_ratio must be in (0, 1]")
        _check(self.det_size % 32 == 0, "det_size must be a multiple of 32")
        _check(self.upsample >= 0, "upsample must be >= 0")
        _check(self.det_size > 0, "det_size must be positive")
        _check(self.min_face_size >= 0, "min_face_size must be >= 0")
        _check(self.min_score is None or 0 <= self.min_score <= 1, "min_score must be in [0, 1]")
        # the detector's name is checked by models.preflight, before any work (no model import here)


@dataclass(frozen=True)
class AlignConfig:
    size: int = 112  # the ArcFace template's crop size
    jpeg_quality: int = 95  # stored crop; 95 keeps re-embedding within float16 noise

    def __post_init__(self):
        _check(self.size in (112, 128), "align size must be 112 or 128 (the ArcFace template)")
        _check(1 <= self.jpeg_quality <= 100, "jpeg_quality must be in 1..100")


@dataclass(frozen=True)
class EmbedConfig:
    """``recognizer``: 'edgeface_s' (default, BSD-3), 'w600k_mbf' (non-commercial), 'sface', 'dlib-resnet',
    or 'onnx:<path.onnx>' (any [N,3,S,S] -> [N,D] model: insightface ArcFace models and models exported
    by `curate retrain` alike). See models/recognizers.py."""

    recognizer: str = option("edgeface_s", "edgeface_s (BSD-3) | w600k_mbf (InsightFace, non-commercial) | sface "
                             "(Apache-2.0) | dlib-resnet | onnx:<model.onnx> | insightface:<model dir|pack name> | "
                             "chain:<projection.onnx> (curate loop) | adaface:<file.ckpt> | magface:<file.pth>.")
    # (its name is checked by models.preflight, before any work)


@dataclass(frozen=True)
class ScoreConfig:
    """Thresholds of the scoring and selection step. Changing them never re-runs a model:
    ``curate score OUT`` recomputes scores and decisions from the stored embeddings."""

    mode: str = option("kmeans", "Sub-centers by spherical k-means, or by a sub-center ArcFace head fitted on the "
                       "embeddings (torch).", choices=("kmeans", "head"))
    k: int = 3  # sub-centers per identity
    iters: int = 10  # spherical k-means iterations (also the head's initialisation)
    head_epochs: int = 3
    # Sub-centers closer than this to the dominant one are the same person; None: the card's
    # merge threshold (the same question as two identities being one person), else 45.
    merge_angle: float | None = option(None, "Sub-centers this close (deg) to the dominant one are the same person "
                                       "(default: the card's merge threshold).")
    # far_from_dominant beyond this angle to the identity's dominant center (the face left out of
    # it); None: the model card's calibrated threshold (the paper's 75 degrees is ArcFace's).
    far_angle: float | None = option(None, "far_from_dominant beyond this angle (deg) to the identity's dominant "
                                     "center, the face left out (default: the recognizer card's calibrated threshold; "
                                     "see `curate calibrate`).")
    min_dominant_share: float = option(0.5, "Identities below this share are flagged for review.")
    # The paper's K=3->1 drops samples beyond far_angle and keeps the rest, whatever sub-center they
    # picked; is_dominant is always recorded. True also rejects non-dominant faces within the angle.
    drop_non_dominant: bool = option(False, "Also reject faces in non-dominant sub-centers within the far angle.")
    # Cosine thresholds; None: the model card's calibrated ones (curate.calibration). A model with
    # no calibration gets estimates from the run, with a warning.
    dup_threshold: float | None = option(None, "Embedding cosine at which two distinct shots are near-identical "
                                         "(default: the card's). Copies are found by their perceptual hashes.")
    drop_near_identical: bool = option(False, "Keep only the best of each group of near-identical shots (bursts, "
                                       "video frames, lab sittings); by default they are kept and marked "
                                       "(near_identical_of).")
    merge_threshold: float | None = option(None, "Center cosine at which two identities are one person (default: "
                                           "the card's).")
    merge: str = option("relabel", "One person under several labels (merge candidates): relabel the smaller labels as "
                        "the largest (kept, trained as one class), flag them (kept apart, listed) or reject them.",
                        choices=("relabel", "flag", "reject"))
    conflict_margin: float = option(0.05, "Cosine by which a face must be nearer another identity.")
    # quality is the recognizer's chance (percent) of matching the face to its identity (curate.quality)
    unidentifiable_below: float | None = option(None, "Quality (0-100: the recognizer's chance of verifying the face "
                                                "against another photo of the person, from its signals) under which "
                                                "any face is unidentifiable (default: the card's).")
    unmatched_below: float | None = option(None, "Quality under which a face that does not match its identity (far "
                                           "from it, or nearer another) is unidentifiable, not mislabelled "
                                           "(default: the card's; never below --unidentifiable-below).")
    # an exported quality head (models.quality_head): its output norm, as a percentile of its card's
    # reference, is the quality signal (with the signals its card names) instead of the recognizer's
    quality_model: str | None = option(None, "A quality head ONNX (bench/quality_head.py --export) run on the stored "
                                       "raw features: its output norm, a percentile of its card's reference, is the "
                                       "quality signal.", path=True)

    def __post_init__(self):
        _check(self.mode in ("kmeans", "head"), "mode must be kmeans or head")
        _check(self.merge in ("relabel", "flag", "reject"), "merge must be relabel, flag or reject")
        _check(self.k >= 1 and self.iters >= 1, "k and iters must be >= 1")
        _check(self.far_angle is None or 0 < self.far_angle <= 180, "far_angle must be in (0, 180]")
        _check(self.merge_angle is None or 0 < self.merge_angle <= 180, "merge_angle must be in (0, 180]")
        for v in (self.dup_threshold, self.merge_threshold):
            _check(v is None or -1 <= v <= 1, "cosine thresholds must be in [-1, 1]")
        for name in ("unidentifiable_below", "unmatched_below"):
            _check(getattr(self, name) is None or 0 <= getattr(self, name) <= 100, f"{name} must be in [0, 100]")
        _check(0 <= self.min_dominant_share <= 1, "min_dominant_share must be in [0, 1]")
        _check(0 <= self.conflict_margin <= 2, "conflict_margin must be in [0, 2] (a cosine difference)")


@dataclass(frozen=True)
class Resources:
    """How fast, never what: excluded from the config hash."""

    workers: int = option(0, "Ray workers (0: one per CPU).", short="-w")
    threads_per_worker: int = option(1, "CPUs (and onnxruntime threads) per Ray worker.", flag="--threads")
    gpus_per_worker: float = option(0.0, "GPUs per worker (used only where Ray sees GPUs).", flag="--gpus")
    batch_size: int = option(64, "Images processed together inside a shard.")
    engine: str = option("auto", "local: every step in this process (no Ray, no Prefect); flow: the Prefect flow, "
                         "shards on Ray; auto: local for a crawl of up to 2,000 images unless RAY_ADDRESS, "
                         "PREFECT_API_URL or --gpus asks for the flow.", choices=("auto", "local", "flow"))

    def __post_init__(self):
        _check(self.workers >= 0, "workers must be >= 0")
        _check(self.threads_per_worker >= 1, "threads_per_worker must be >= 1")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(self.gpus_per_worker >= 0, "gpus_per_worker must be >= 0")
        _check(self.engine in ("auto", "local", "flow"), "engine must be auto, local or flow")

    def local_workers(self) -> int:
        """Workers on this machine: ``workers``, or its CPUs over ``threads_per_worker``."""
        return self.workers or max(1, (os.cpu_count() or 1) // self.threads_per_worker)


@dataclass(frozen=True)
class RunConfig:
    shard_size: int = option(2000, "Images per shard (unit of work and resume).")
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def __post_init__(self):
        _check(self.shard_size >= 1, "shard_size must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(
            shard_size=d["shard_size"],
            decode=DecodeConfig(**d["decode"]),
            detect=DetectConfig(**d["detect"]),
            align=AlignConfig(**d["align"]),
            embed=EmbedConfig(**d["embed"]),
        )

    def digest(self) -> str:
        """8 hex chars naming every output of this config: same config, same paths."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]
