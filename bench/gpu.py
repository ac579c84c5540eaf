"""The GPU measurements in one go (run by bench/gpu.sh, under 10 minutes on one H100/H200):

1. training: images/s and MFU per backbone x head, bf16 autocast, eager and torch.compile
   (bench/train.py's step: SGD, synthetic 112x112 inputs);
2. embedding: images/s of the torch backbones ``curate retrain`` exports, bf16, inference; the
   ONNX recognizers through onnxruntime's CUDA provider where onnxruntime-gpu and the registry
   packages are installed;
3. scoring 10M faces: 512-d float16 embeddings over 200K identities generated on the GPU, then the
   scoring's heavy kernels timed: nearest identity center for every face (blocked matmul + top-2),
   one spherical k-means iteration of the sub-centers (segment sums), and the near-duplicate
   search in cells (k-means cells on a sample, exact top-4 within each cell); faiss-gpu's IVF
   search instead where faiss has GPUs.

Each part that cannot run here says why and the others go on. JSON to stdout and --out.

    python bench/gpu.py [--faces 10000000] [--identities 200000] [--out bench-out/gpu.json] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import traceback
from pathlib import Path

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, repeat=3):
    fn()  # warm-up (and compile)
    sync(dev)
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync(dev)
    return (time.perf_counter() - t) / repeat, out


def environment(dev) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": dev}
    if dev == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    try:
        import faiss

        env["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        env["faiss_gpus"] = None
    return env


def training(args, dev, peak) -> list:
    import train as T

    out = []
    for compiled in ([False, True] if dev == "cuda" and not args.smoke else [False]):
        ns = argparse.Namespace(batch_size=args.train_batch, classes=10_000, steps=args.train_steps, warmup=3,
                                compile=compiled, peak_tflops=peak)
        for bb in args.backbones:
            for head in ("arcface", "adaface"):
                r = T.bench(bb, head, ns, dev)
                r["compile"] = compiled
                out.append(r)
                print(json.dumps(r), flush=True)
    return out


def embedding(args, dev) -> dict:
    from models.backbones import build_backbone

    out = {}
    for bb in args.backbones:
        model = build_backbone(bb).to(dev).eval()
        x = torch.randn(args.embed_batch, 3, 112, 112, device=dev)

        @torch.inference_mode()
        def fwd():
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
                return model(x)

        dt, _ = timed(fwd, dev)
        out[f"torch_{bb}_images_per_s"] = round(args.embed_batch / dt, 1)
    try:
        import numpy as np
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            out["onnx"] = "skipped: onnxruntime has no CUDA provider here (install onnxruntime-gpu)"
        else:
            from models import RECOGNIZERS

            for name in args.recognizers:
                rec = RECOGNIZERS.build(name, gpu=True)
                crops = np.random.default_rng(0).integers(0, 255, (args.embed_batch, rec.size, rec.size, 3), np.uint8)
                dt, _ = timed(lambda: rec.embed(crops), "cpu")
                out[f"onnx_{name}_images_per_s"] = round(len(crops) / dt, 1)
    except Exception as exc:  # a registry package missing on this machine: say so, go on
        out["onnx"] = f"skipped: {type(exc).__name__}: {exc}"
    return out


def scoring(args, dev) -> dict:
    n, ids, d = args.faces, args.identities, 512
    g = torch.Generator(device=dev).manual_seed(0)
    out = {"faces": n, "identities": ids}
    t = time.perf_counter()
    centers = torch.nn.functional.normalize(torch.randn(ids, d, device=dev, generator=g), dim=1)
    label = torch.randint(0, ids, (n,), device=dev, generator=g)
    emb = torch.empty(n, d, device=dev, dtype=torch.float16)
    step = 1 << 20
    for a in range(0, n, step):
        e = centers[label[a:a + step]] + 0.6 / d ** 0.5 * torch.randn(min(step, n - a), d, device=dev, generator=g)
        emb[a:a + step] = torch.nn.functional.normalize(e, dim=1).half()
    sync(dev)
    out["generate_s"] = round(time.perf_counter() - t, 2)
    c16 = centers.half()

    def nearest():  # top-2 identity centers for every face
        best = []
        for a in range(0, n, step):
            best.append(torch.topk(emb[a:a + step] @ c16.T, 2, dim=1).indices)
        return torch.cat(best)

    dt, _ = timed(nearest, dev, repeat=1)
    out["nearest_center_s"] = round(dt, 2)
    out["nearest_center_tflops"] = round(2 * n * ids * d / dt / 1e12, 1)
    k = 3
    sub = torch.randint(0, k, (n,), device=dev, generator=g)

    def kmeans_iteration():  # segment sums of the faces into (identity, sub-center) + renormalise
        sums = torch.zeros(ids * k, d, device=dev, dtype=torch.float32)
        for a in range(0, n, step):
            sums.index_add_(0, label[a:a + step] * k + sub[a:a + step], emb[a:a + step].float())
        return torch.nn.functional.normalize(sums, dim=1)

    dt, _ = timed(kmeans_iteration, dev, repeat=2)
    out["kmeans_iteration_s"] = round(dt, 3)
    try:
        import faiss

        gpu_faiss = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except ImportError:
        gpu_faiss = False
    if gpu_faiss:
        from curate.stages import dedup

        x = emb.cpu().numpy()
        t = time.perf_counter()
        r, c, s = dedup.knn_edges(x, 0.97)
        out["near_duplicates_faiss_gpu_s"] = round(time.perf_counter() - t, 1)
        out["near_duplicate_edges"] = int(len(r))
    else:
        cells = args.cells
        sample = emb[torch.randperm(n, device=dev, generator=g)[: 40 * cells]].float()
        cent = sample[:cells].clone()
        for _ in range(10):  # spherical k-means on the sample
            a = torch.argmax(sample @ cent.T, dim=1)
            cent = torch.nn.functional.normalize(torch.zeros_like(cent).index_add_(0, a, sample), dim=1)
        cent16 = cent.half()

        def cell_knn():
            cell = torch.cat([torch.argmax(emb[a:a + step] @ cent16.T, dim=1) for a in range(0, n, step)])
            order = torch.argsort(cell)
            bounds = torch.searchsorted(cell[order], torch.arange(cells + 1, device=dev)).tolist()
            edges = 0
            for j in range(cells):
                rows = order[bounds[j]:bounds[j + 1]]
                if len(rows) < 2:
                    continue
                x = emb[rows]
                sims, _ = torch.topk(x @ x.T, min(5, len(rows)), dim=1)
                edges += int((sims[:, 1:] >= 0.97).sum())
            return edges

        dt, edges = timed(cell_knn, dev, repeat=1)
        out["near_duplicates_cells_s"] = round(dt, 1)
        out["near_duplicate_edges"] = edges
        out["near_duplicates_note"] = "torch, exact top-4 within k-means cells (faiss-gpu is not installed here)"
    out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev == "cuda" else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=10_000_000)
    ap.add_argument("--identities", type=int, default=200_000)
    ap.add_argument("--cells", type=int, default=4096)
    ap.add_argument("--backbones", nargs="+", default=["mbf", "r50"])
    ap.add_argument("--recognizers", nargs="+", default=["edgeface_s", "w600k_mbf"])
    ap.add_argument("--train-batch", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--embed-batch", type=int, default=1024)
    ap.add_argument("--out", default="bench-out/gpu.json")
    ap.add_argument("--smoke", action="store_true", help="Tiny sizes, to check the script on a CPU.")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        args.faces, args.identities, args.cells = 20_000, 500, 16
        args.train_batch, args.train_steps, args.embed_batch, args.backbones = 8, 2, 8, ["mbf"]
    env = environment(dev)
    print(json.dumps(env), flush=True)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in env.get("gpu", "")), None)
    result = {"environment": env}
    for name, part in (("scoring", lambda: scoring(args, dev)), ("embedding", lambda: embedding(args, dev)),
                       ("training", lambda: training(args, dev, peak))):
        t = time.perf_counter()
        try:
            result[name] = part()
        except Exception as exc:
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(json.dumps({name: result[name], "seconds": round(time.perf_counter() - t, 1)}), flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
