"""Does int8 pay on this CPU? The recognizers at fp32 against onnxruntime's int8 quantizations.

    .venv/bin/python bench/int8.py [--models edgeface_s w600k_mbf] [--batch 64]

Each packaged recognizer (its batchable graph, as the pipeline runs it) is quantized three ways:
dynamic (weights int8, activations quantized at run time), and static QOperator with per-tensor
and per-channel weights (activations calibrated on 8 random batches: enough for timing, not for
accuracy). Each runs a batch of 112x112 crops on one thread, as a Ray worker does; the figure is
fp32 seconds over int8 seconds (above 1: int8 is faster). On the 2-core development machine (AMD
EPYC, AVX2, no VNNI): EdgeFace-S 0.61x dynamic, 1.01-1.03x static; w600k_mbf 0.77-0.81x; int8
convolutions need VNNI (AVX512-VNNI or AVX-VNNI) to beat fp32 ones, so the pipeline offers no
int8 path (docs/throughput.md). Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def timed(path: str, x: np.ndarray, repeat: int = 3) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    s.run(None, feed)
    t = time.perf_counter()
    for _ in range(repeat):
        s.run(None, feed)
    return (time.perf_counter() - t) / repeat


def main():
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from models import runtime
    from models.cards import builtin, packaged_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["edgeface_s", "w600k_mbf"])
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()

    class Random(CalibrationDataReader):
        def __init__(self, name):
            rng = np.random.default_rng(0)
            self.it = iter([{name: rng.uniform(-1, 1, (8, 3, 112, 112)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    x = np.random.default_rng(1).uniform(-1, 1, (a.batch, 3, 112, 112)).astype(np.float32)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; batch {a.batch}, one thread")
    with tempfile.TemporaryDirectory() as d:
        for name in a.models:
            fp32, q = os.path.join(d, f"{name}.onnx"), os.path.join(d, f"{name}-int8.onnx")
            with open(fp32, "wb") as f:
                f.write(runtime.batchable_cached(packaged_path(builtin(name))))
            base = timed(fp32, x)
            variants = {"dynamic": lambda: quantize_dynamic(fp32, q, weight_type=QuantType.QUInt8)}
            for per_channel in (False, True):
                variants[f"static, per-{'channel' if per_channel else 'tensor'}"] = (
                    lambda pc=per_channel: quantize_static(fp32, q, Random(_input_name(fp32)), quant_format=QuantFormat.QOperator,
                                                           per_channel=pc, weight_type=QuantType.QInt8,
                                                           activation_type=QuantType.QUInt8))
            for label, make in variants.items():
                make()
                t = timed(q, x)
                print(f"{name:12s} {label:22s} fp32 {base:.3f} s, int8 {t:.3f} s: {base / t:.2f}x", flush=True)


def _input_name(path: str) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].name


if __name__ == "__main__":
    main()
