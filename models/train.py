"""The retraining stage: a backbone + margin head trained on curated shards, then evaluated on
verification pairs and exported to ONNX for the next curation round.

Recipe (arcface_torch / the specs): SGD lr 0.1, momentum 0.9, weight decay 5e-4 (none on BN and
biases), linear warmup then polynomial or step decay, per-step; horizontal flips, AdaFace's
low-quality augmentations optional; bf16 autocast and torch.compile where the device supports
them. A checkpoint is written after every epoch (temp + rename) and a rerun resumes from it.
Checkpoints hold tensors and numbers only and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from curate.errors import ConfigError, InputError
from curate.files import atomic_write, write_json
from models.backbones import build_backbone
from models.data import LowQualityAugment, ShardFaces
from models.heads import build_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = "r50"
    head: str = "arcface"
    head_kwargs: dict = field(default_factory=dict)  # e.g. {"m": 0.4}, {"k": 3}, {"lambda_g": 35}
    embedding_size: int = 512
    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: str = "poly"  # poly | step
    milestones: tuple[int, ...] = (10, 16, 18)  # step schedule: x0.1 at these epochs
    sample_rate: float = 1.0  # Partial FC
    kept_only: bool = True  # train on the rows the curation kept (False: all rows with a crop)
    adaface_augment: bool = False
    amp: bool = True  # bf16 autocast on CUDA
    compile: bool = False
    num_workers: int = 2
    seed: int = 0
    max_steps: int | None = None  # stop early (tests, smoke runs)
    grad_clip: float = 5.0
    # Sub-center ArcFace K=3->1: at this epoch, drop samples beyond drop_angle degrees of their
    # class's dominant sub-center and continue with K=1 on the dominant centers.
    drop_subcenters_at: int | None = None
    drop_angle: float = 75.0
    # Identities kept out of training (a stable hash picks them; only when there are 10 or more):
    # the exported model is calibrated and verified on people it never saw.
    holdout: float = 0.1

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError("optimizer must be sgd or adamw")
        if self.schedule not in ("poly", "step"):
            raise ConfigError("schedule must be poly or step")
        if self.drop_subcenters_at is not None and self.head != "subcenter":
            raise ConfigError("drop_subcenters_at needs the subcenter head")
        if not 0.0 <= self.holdout < 0.5:
            raise ConfigError("holdout must be in [0, 0.5)")


# Settings a rerun may change and still continue the same training (longer, or with other
# loader/compile resources); any other difference is another training, refused in the same place.
RESUMABLE = ("epochs", "max_steps", "num_workers", "compile")


def held_out(identities: list[str], fraction: float) -> set[str]:
    """A stable choice of identities to keep out of training: those with the smallest hash, a
    ``fraction`` of them, when there are 10 or more (and at least 3 then)."""
    import hashlib

    if fraction <= 0 or len(identities) < 10:
        return set()
    n = max(3, int(fraction * len(identities)))
    return set(sorted(identities, key=lambda i: hashlib.blake2b(i.encode(), digest_size=8).hexdigest())[:n])


def check_resume(out: str, cfg: TrainConfig) -> None:
    """A rerun into ``out`` must be the training that is there: refuse, naming the settings that
    differ, instead of loading weights of another head or backbone."""
    from curate.errors import OtherRun
    from curate.files import config_diff

    p = os.path.join(out, "history.json")
    if not os.path.exists(os.path.join(out, "checkpoint.pt")) or not os.path.exists(p):
        return
    with open(p) as f:
        old = json.load(f)["config"]
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples as lists, like the stored one
    diffs = [d for d in config_diff(old, new) if d.split(":")[0].split(".")[0] not in RESUMABLE]
    if diffs:
        raise OtherRun(f"{out} holds another training ({'; '.join(diffs)}); use another --out, or the same "
                          "settings to resume it")


def _param_groups(modules, weight_decay):
    decay, no_decay = [], []
    for m in modules:
        for name, p in m.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)  # BN, PReLU, biases: no decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        return 0.1 ** sum(epoch >= m for m in cfg.milestones)
    total = max(cfg.epochs * steps_per_epoch, warm + 1)
    return max(1.0 - (step - warm) / (total - warm), 0.0) ** 2


@torch.no_grad()
def embed_all(backbone, data: ShardFaces, device: str, batch_size: int = 256):
    """(N, D) raw embeddings, (N,) labels, image_ids of every usable row (eval mode, no augmentation)."""
    backbone.eval()
    embs, labels, ids, batch = [], [], [], []

    def flush():
        x = torch.stack([b[1] for b in batch]).to(device)
        embs.append(backbone(x).float().cpu())
        labels.extend(b[2] for b in batch)
        ids.extend(b[0] for b in batch)
        batch.clear()

    for item in data.plain():
        batch.append(item)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return torch.cat(embs), torch.tensor(labels), ids


def drop_subcenters(backbone, head, data: ShardFaces, cfg: "TrainConfig", device: str, out: str):
    """K=3->1: returns the K=1 head; drops far samples from ``data``; writes out/dropped.json."""
    emb, labels, ids = embed_all(backbone, data, device)
    rep = head.report(emb.to(device), labels.to(device))
    keep = head.keep_mask(rep, labels, cfg.drop_angle).cpu()
    dropped = [i for i, k in zip(ids, keep.tolist()) if not k]
    data.drop(dropped)
    angles = rep.angle_to_dominant.cpu().tolist()
    with open(os.path.join(out, "dropped.json"), "w") as f:
        json.dump({"max_angle": cfg.drop_angle, "dominant": rep.dominant.tolist(),
                   "dominant_share": rep.dominant_share.tolist(),
                   "dropped": {i: a for i, a, k in zip(ids, angles, keep.tolist()) if not k}}, f)
    log.info("K=3->1: dropped %d of %d samples beyond %.0f degrees", len(dropped), len(ids), cfg.drop_angle)
    warnings = []
    if len(data) < cfg.batch_size:
        warnings.append(f"K=3->1 dropped {len(dropped)} of {len(ids)} faces beyond {cfg.drop_angle:.0f} deg: the {len(data)} "
                        f"left are fewer than one batch ({cfg.batch_size}), so no further step runs; lower --batch-size")
    elif len(dropped) > len(ids) / 2:
        warnings.append(f"K=3->1 dropped {len(dropped)} of {len(ids)} faces beyond {cfg.drop_angle:.0f} deg: more than half; "
                        "the backbone may not have trained long enough before the drop (--drop-subcenters-at)")
    for w in warnings:
        log.warning(w)
    return head.to_single_center(rep.dominant).to(device), rep.dominant, warnings


def _optimizer(cfg, backbone, head):
    groups = _param_groups([backbone, head], cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(opt, cfg: "TrainConfig", steps_per_epoch: int, step: int = 0):
    """Warmup + decay, per step, positioned at ``step`` (a fresh optimizer keeps the schedule)."""
    for g in opt.param_groups:
        g.setdefault("initial_lr", cfg.lr)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, steps_per_epoch), last_epoch=step - 1)


def train(shards: str, out: str, cfg: TrainConfig, device: str | None = None, log_every: int = 50,
          progress: bool = False) -> dict:
    """Train on the curated shards in ``shards``; write checkpoint.pt, history.json and
    metrics.csv (one row per epoch: loss, lr, images/s) in ``out``. ``progress``: a bar with the
    loss, images/s and the time left."""
    check_resume(out, cfg)
    os.makedirs(out, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    data = ShardFaces(shards, kept_only=cfg.kept_only, seed=cfg.seed,
                      augment=LowQualityAugment() if cfg.adaface_augment else None)
    holdout = held_out(sorted(data.labels), cfg.holdout)
    if holdout:
        data.labels = {k: i for i, k in enumerate(sorted(set(data.labels) - holdout))}
    if data.num_classes < 2:
        raise InputError(f"{shards}: need at least 2 identities to train, found {data.num_classes}")
    if len(data) < cfg.batch_size:
        raise InputError(f"{shards}: {len(data)} training faces, fewer than one batch ({cfg.batch_size}): no step would "
                         "run; lower --batch-size")
    warnings: list[str] = []
    backbone = build_backbone(cfg.backbone, embedding_size=cfg.embedding_size).to(device)
    head = build_head(cfg.head, cfg.embedding_size, data.num_classes, sample_rate=cfg.sample_rate,
                      **cfg.head_kwargs).to(device)
    opt = _optimizer(cfg, backbone, head)
    steps_per_epoch = max(len(data) // cfg.batch_size, 1)
    sched = _scheduler(opt, cfg, steps_per_epoch)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    start_epoch, step, history, dominant = 0, 0, [], None
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if "dominant" in ck:  # resumed after K=3->1: rebuild the K=1 head and the drop list
            head = head.to_single_center(ck["dominant"]).to(device)
            with open(os.path.join(out, "dropped.json")) as f:
                data.drop(json.load(f)["dropped"])
            dominant = ck["dominant"]
            opt = _optimizer(cfg, backbone, head)
            sched = _scheduler(opt, cfg, steps_per_epoch)
        backbone.load_state_dict(ck["backbone"])
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, step = int(ck["epoch"]), int(ck["step"])
        with open(os.path.join(out, "history.json")) as f:
            history = json.load(f)["history"]
        log.info("resumed from epoch %d, step %d", start_epoch, step)
    model = torch.compile(backbone) if cfg.compile else backbone
    use_amp = cfg.amp and device.startswith("cuda")
    loader = DataLoader(data, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
                        pin_memory=device.startswith("cuda"), persistent_workers=False)
    t_start = time.perf_counter()
    images = 0
    bar = None
    if progress:
        from tqdm import tqdm

        total = min(cfg.epochs * steps_per_epoch, cfg.max_steps or 1 << 62)
        bar = tqdm(total=total, initial=min(step, total), unit="step", desc="train", smoothing=0.1)
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch, n_epoch, first = time.perf_counter(), 0, len(history)
        if epoch == cfg.drop_subcenters_at and dominant is None:
            head, dominant, dropped_warnings = drop_subcenters(backbone, head, data, cfg, device, out)
            warnings += dropped_warnings
            opt = _optimizer(cfg, backbone, head)  # new head parameters; schedule position kept
            sched = _scheduler(opt, cfg, steps_per_epoch, step)
        data.epoch = epoch
        backbone.train()
        head.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                emb = model(x)
            loss = head(emb.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(backbone.parameters()) + list(head.parameters()), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            images += len(y)
            n_epoch += len(y)
            history.append({"step": step, "epoch": epoch, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{history[-1]['loss']:.3f}",
                                img_s=f"{images / max(time.perf_counter() - t_start, 1e-9):.0f}", refresh=False)
            if step % log_every == 0:
                log.info("epoch %d step %d loss %.4f lr %.4g", epoch, step, history[-1]["loss"], history[-1]["lr"])
            if cfg.max_steps and step >= cfg.max_steps:
                break
        state = {"backbone": backbone.state_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict(), "epoch": epoch + 1, "step": step}
        if dominant is not None:
            state["dominant"] = dominant
        atomic_write(ckpt_path, lambda tmp: torch.save(state, tmp))
        write_json(os.path.join(out, "history.json"), {"config": dataclasses.asdict(cfg), "labels": data.labels,
                                                        "held_out": sorted(holdout), "history": history})
        _log_epoch(out, epoch, step, history[first:], n_epoch, time.perf_counter() - t_epoch)
        if cfg.max_steps and step >= cfg.max_steps:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    return {"warnings": warnings, "backbone": backbone, "head": head, "num_classes": data.num_classes, "steps": step,
            "images_per_s": images / seconds if seconds > 0 and images else None, "history": history,
            "device": device, "held_out": sorted(holdout), "steps_this_run": images // max(cfg.batch_size, 1)}


METRICS = ("epoch", "step", "loss", "loss_min", "loss_max", "lr", "images", "seconds", "images_per_s")


def _log_epoch(out: str, epoch: int, step: int, rows: list[dict], images: int, seconds: float) -> None:
    """Append one row per epoch to out/metrics.csv (a resumed run keeps appending)."""
    path = os.path.join(out, "metrics.csv")
    losses = [r["loss"] for r in rows]
    row = {"epoch": epoch, "step": step, "loss": round(sum(losses) / len(losses), 5) if losses else "",
           "loss_min": round(min(losses), 5) if losses else "", "loss_max": round(max(losses), 5) if losses else "",
           "lr": f"{rows[-1]['lr']:.6g}" if rows else "", "images": images, "seconds": round(seconds, 2),
           "images_per_s": round(images / seconds, 1) if seconds > 0 and images else ""}
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(",".join(METRICS) + "\n")
        f.write(",".join(str(row[k]) for k in METRICS) + "\n")
    log.info("epoch %d: loss %s, %s images/s", epoch, row["loss"], row["images_per_s"])
