"""Tiny real ONNX models, built in tests, that insightface routes and runs with its own code.

``scrfd``: an SCRFD-shaped detector (9 outputs: scores, box distances and keypoint offsets for
strides 8/16/32, two anchors per cell) on a static 64x64 input. It "detects" every bright 8x8 cell
of the letterboxed input at stride 8: a 32x32 box centred on the cell's anchor, with the five
ArcFace template points inside it. So an image holding a bright square yields a face there.

``arcface``: [N,3,112,112] -> [N,dim]: 8x8 average pooling then a seeded random projection; an
embedding whose raw norm is not 1, like a real ArcFace model's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.templates import ARCFACE_112

SCRFD_SIZE = 64
BOX = 32  # px side of a detected box, in the 64x64 detector input


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def scrfd(path: str) -> str:
    nodes, inits, outputs = [], [], []
    inits += [_const("thr", 0.5), _const("gain", 20.0), _const("off", -10.0)]
    inits.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "flat"))
    nodes += [
        helper.make_node("ReduceMean", ["input.1"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["gray"], ["cells"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Sub", ["cells", "thr"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
        helper.make_node("Reshape", ["prob", "flat"], ["prob_col"]),
        helper.make_node("Concat", ["prob_col", "prob_col"], ["prob2"], axis=1),  # two anchors per cell
        helper.make_node("Reshape", ["prob2", "flat"], ["score_8"]),
    ]
    # Keypoints: the ArcFace template mapped into a BOX-sized square centred on the anchor, in stride units.
    kps = ((ARCFACE_112 - 56.0) * (BOX / 112.0) / 8.0).reshape(10)
    # Coarser strides: a score that depends on the input but stays near 0.
    for stride in (16, 32):
        n = (SCRFD_SIZE // stride) ** 2 * 2
        nodes.append(helper.make_node("ReduceMean", ["input.1"], [f"m{stride}"], keepdims=0))
        nodes.append(helper.make_node("Add", [f"m{stride}", "off"], [f"l{stride}"]))
        nodes.append(helper.make_node("Sigmoid", [f"l{stride}"], [f"p{stride}"]))
        inits.append(_const(f"ones{stride}", np.ones((n, 1))))
        nodes.append(helper.make_node("Mul", [f"ones{stride}", f"p{stride}"], [f"score_{stride}"]))
    for stride in (8, 16, 32):
        n = (SCRFD_SIZE // stride) ** 2 * 2
        half = BOX / 2 / stride
        inits.append(_const(f"bbox_{stride}_c", np.full((n, 4), half)))
        inits.append(_const(f"kps_{stride}_c", np.tile(kps / (stride / 8.0), (n, 1))))
        nodes.append(helper.make_node("Identity", [f"bbox_{stride}_c"], [f"bbox_{stride}"]))
        nodes.append(helper.make_node("Identity", [f"kps_{stride}_c"], [f"kps_{stride}"]))
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (SCRFD_SIZE // stride) ** 2 * 2
            outputs.append(helper.make_tensor_value_info(f"{kind}_{stride}", TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, SCRFD_SIZE, SCRFD_SIZE])],
        outputs, inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def arcface(path: str, dim: int = 32, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1 / np.sqrt(3 * 14 * 14), (3 * 14 * 14, dim)) * 8.0
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["fc1"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", dim])],
        [_const("proj", w)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def bright_square_image(size: int = 128, at: tuple[int, int] = (48, 64), side: int = 16) -> np.ndarray:
    """A dark RGB image with one bright square (top-left ``at``, x, y): one face for ``scrfd``."""
    img = np.full((size, size, 3), 10, np.uint8)
    x, y = at
    img[y : y + side, x : x + side] = 250
    return img
