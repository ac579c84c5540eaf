import os
import tempfile
from pathlib import Path

import pytest

# Embedded-mode settings for Ray and Prefect, isolated from the user's own (before any import).
_TMP = tempfile.mkdtemp(prefix="facecurate-tests-")
os.environ.setdefault("PREFECT_HOME", os.path.join(_TMP, "prefect"))
for k, v in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "OMP_NUM_THREADS": "2",
}.items():
    os.environ.setdefault(k, v)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    """A 49-file real crawl (packaged photos, variants, deliberate noise)."""
    from curate.sample import build_sample_crawl

    root = tmp_path_factory.mktemp("crawl")
    build_sample_crawl(str(root), variants=4)
    return root


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    from curate.testing import tiny_models

    d = tmp_path_factory.mktemp("onnx")
    return {"det": tiny_models.scrfd(str(d / "det.onnx")), "rec": tiny_models.arcface(str(d / "rec.onnx"))}


DLIB = {"detect": {"detector": "dlib-hog"}, "embed": {"recognizer": "dlib-resnet"}}


@pytest.fixture(scope="session")
def dlib_models():
    """dlib's HOG detector and 128-d ResNet: the last-fallback models."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from curate.config import DetectConfig, EmbedConfig, RunConfig
    from curate.pipeline import load_models

    return load_models(RunConfig(detect=DetectConfig(detector="dlib-hog"), embed=EmbedConfig(recognizer="dlib-resnet")))


@pytest.fixture(scope="session")
def default_models():
    """The default models: YuNet and EdgeFace-S, from their registry packages."""
    from curate.config import RunConfig
    from curate.pipeline import load_models

    return load_models(RunConfig(), threads=2)


def curate_in_process(crawl, out, models, shard_size: int = 16, batch_size: int = 8) -> dict:
    """A crawl through the spine in-process (no Ray, no Prefect), then scored with the recognizer
    card's calibration; returns the scoring summary."""
    from curate.config import Resources, RunConfig, ScoreConfig
    from curate.io.shards import ShardStore
    from curate.io.sources import open_source
    from curate.pipeline import process_shard
    from curate.scoring import score_run

    cfg = RunConfig(shard_size=shard_size)
    store = ShardStore(str(out))
    store.open_run(open_source(str(crawl)), cfg)
    store.record_recognizer(models.recognizer, models.detector)
    for s in store.pending():
        process_shard(store, store.source(), s, models, cfg, Resources(batch_size=batch_size))
    return score_run(store.out, ScoreConfig())


@pytest.fixture(scope="session")
def scored_run(tmp_path_factory, sample_crawl, default_models):
    """The sample crawl through the spine in-process with the default models (16-image shards, no
    Ray), then scored with the recognizer card's calibration."""
    return curate_in_process(sample_crawl, tmp_path_factory.mktemp("scored"), default_models)["out"]
