"""onnxruntime sessions for face models.

Threads are the caller's choice: a Ray worker that owns one core asks for one thread, so N workers
never start N x cores threads (onnxruntime's default pool is sized to the machine, not the task).
Graphs exported with a fixed batch of 1 are made batchable in memory (the file on disk, whose
sha256 was checked, is never rewritten), and onnxruntime's per-initializer warnings are silenced.
"""

from __future__ import annotations

import os

from curate.errors import CurateError, ModelError, require_module
from curate.files import atomic_write


def model_files(path: str) -> list[str]:
    """The ONNX file and every external-data file it loads (``model.onnx.data``, ...), sorted.
    A model file (its first field the IR version: byte 0x08) without the bytes ``location`` (the
    key every external-data entry carries) has none, and is answered without importing onnx
    (0.8 s); anything else is parsed, and a file that is no ONNX model is a ModelError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:1] == b"\x08" and b"location" not in data:
            return [path]
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror})") from exc
    onnx = require_module("onnx", "default")
    from onnx.external_data_helper import uses_external_data

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    names = set()
    for t in proto.graph.initializer:
        if uses_external_data(t):
            names.update(e.value for e in t.external_data if e.key == "location")
    base = os.path.dirname(os.path.abspath(path))
    extra = sorted(os.path.join(base, n) for n in names)
    for f in extra:
        if not os.path.isfile(f):
            raise ModelError(f"{path}: its external weights {f} are missing")
    return [path, *extra]


REWRITE = 1  # the version of ``batchable``'s rewrite: a cached graph from another version is not used


def _cache_dir() -> str:
    return os.path.join(os.environ.get("FACECURATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "facecurate"), "onnx")


def batchable_cached(path: str, spatial: bool = False, digest: str | None = None) -> bytes:
    """``batchable(path, spatial)``, kept in the user's cache (FACECURATE_CACHE, else
    ~/.cache/facecurate) under the digest of the model's files (``digest``: the one its loader
    checked already; else computed): the rewrite (and its import of onnx) costs about a second a
    run, the cached graph a file read. A cache that cannot be written is skipped."""
    if digest is None:
        from models.cards import files_sha256

        digest = files_sha256(model_files(path))
    key = f"{digest}-{int(spatial)}-v{REWRITE}"
    cached = os.path.join(_cache_dir(), key + ".onnx")
    try:
        with open(cached, "rb") as f:
            return f.read()
    except OSError:
        pass
    model = batchable(path, spatial)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(model)

    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        atomic_write(cached, write)
    except (OSError, CurateError):
        pass
    return model


def batchable(path: str, spatial: bool = False) -> bytes:
    """The model with a symbolic batch dimension on its inputs and outputs, initializers removed
    from the graph inputs (old exporters list them, which blocks constant folding), stale shape
    annotations dropped, and Reshape targets that hard-code a leading 1 turned into 0 ("copy the
    input's dimension"), so a graph exported at batch 1 runs any batch. ``batched_session`` checks
    the result against batch-of-1 runs before trusting it."""
    onnx = require_module("onnx", "default")
    from onnx import numpy_helper

    proto = onnx.load(path)
    inits = {t.name: t for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    del proto.graph.value_info[:]
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "N"
    if spatial:  # a detector exported at one input size: any H x W (multiples of its stride)
        for v in proto.graph.input:
            dims = v.type.tensor_type.shape.dim
            if len(dims) == 4:
                dims[2].dim_param, dims[3].dim_param = "H", "W"
        for v in proto.graph.output:
            dims = v.type.tensor_type.shape.dim
            if len(dims) == 3:
                dims[1].dim_param = "A"
    for node in proto.graph.node:
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target.ndim == 1 and len(target) > 1 and target[0] == 1:
                target[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
    return proto.SerializeToString()


def session(model: str | bytes, threads: int = 0, gpu: bool = False, name: str = ""):
    """An InferenceSession on CPU (or CUDA when asked and available). threads 0: onnxruntime's
    default (all cores), for use outside a worker pool."""
    ort = require_module("onnxruntime", "default")
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: old exports trigger one warning per initializer
    # idle pool threads sleep instead of spinning: a shard's next batch is decoded in a second
    # thread meanwhile (curate.pipeline.process_shard), and spinning took its core (the spine 9%
    # faster in process with SCRFD + w600k_mbf on 1,590 photos, 2 cores)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(model, so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception classes for bad graphs
        raise ModelError(f"{name or model}: onnxruntime cannot load it: {exc}") from exc


def batched_session(path: str, threads: int = 0, gpu: bool = False, spatial: bool = False,
                    probe: tuple[int, ...] = (3, 112, 112), digest: str | None = None):
    """(session, batch limit): the batchable graph when two random inputs run together give what
    each gives alone, else the graph as exported with batches of one (a rewrite that would change
    results is never used). ``digest``: the model files' digest its loader checked (the cache key
    of the rewritten graph; computed when not given)."""
    import numpy as np

    try:
        sess = session(batchable_cached(path, spatial, digest), threads, gpu, name=path)
        x = np.random.default_rng(0).uniform(-1, 1, (2, *probe)).astype(np.float32)
        name = sess.get_inputs()[0].name
        both = sess.run(None, {name: x})
        alone = [sess.run(None, {name: x[i : i + 1]}) for i in range(2)]
        if all(np.allclose(b, np.concatenate([a[k] for a in alone]), rtol=1e-3, atol=1e-4)
               for k, b in enumerate(both)):
            return sess, 1 << 16
    except Exception:  # a rewrite onnxruntime rejects, or shapes that do not batch: fall back
        pass
    return session(path, threads, gpu, name=path), 1
