"""Training throughput: images/s and model FLOP utilisation (MFU) per backbone x head.

    .venv/bin/python bench/train.py --backbones mbf r50 --heads arcface adaface --batch-size 64 --steps 10
    # on a GPU (bf16 autocast, optionally torch.compile):
    python bench/train.py --backbones r50 r100 --heads arcface adaface --batch-size 512 --compile --peak-tflops 989

Synthetic inputs (throughput does not depend on pixels), 10K classes, SGD step included. FLOPs per
image are counted with torch's FlopCounterMode on one forward+backward; MFU = achieved FLOP/s over
the device's dense bf16 peak (--peak-tflops; H100 SXM 989). Results to stdout and bench-out/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.backbones import build_backbone
from models.heads import build_head


def step_fn(backbone, head, opt, device, amp):
    def step(x, y):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            emb = backbone(x)
        loss = head(emb.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def bench(backbone_name, head_name, args, device) -> dict:
    torch.manual_seed(0)
    backbone = build_backbone(backbone_name).to(device).train()
    head = build_head(head_name, 512, args.classes).to(device).train()
    opt = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    model = torch.compile(backbone) if args.compile else backbone
    amp = device == "cuda"
    x = torch.randn(args.batch_size, 3, 112, 112, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    step = step_fn(model, head, opt, device, amp)
    with FlopCounterMode(display=False) as fc:
        step_fn(backbone, head, opt, device, amp)(x, y)
    flops_per_image = fc.get_total_flops() / args.batch_size
    for _ in range(args.warmup):
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    ips = args.batch_size * args.steps / dt
    r = {"backbone": backbone_name, "head": head_name, "batch": args.batch_size, "images_per_s": round(ips, 1),
         "gflops_per_image_fwd_bwd": round(flops_per_image / 1e9, 2),
         "achieved_tflops": round(ips * flops_per_image / 1e12, 3)}
    if args.peak_tflops:
        r["mfu"] = round(ips * flops_per_image / (args.peak_tflops * 1e12), 3)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["mbf", "r50"])
    ap.add_argument("--heads", nargs="+", default=["arcface", "adaface"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 SXM bf16 dense: 989)")
    ap.add_argument("--out", default="bench-out")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    results = {"machine": machine, "device": device, "torch": torch.__version__, "args": vars(args), "runs": []}
    for b in args.backbones:
        for h in args.heads:
            r = bench(b, h, args, device)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    Path(args.out).mkdir(exist_ok=True)
    (Path(args.out) / "train.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
