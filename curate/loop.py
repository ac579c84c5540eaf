"""Close the loop, measured: does training on the curated faces beat training on the raw crawl?

``compare`` takes a curated run and trains the same recipe twice, a projection on the run's frozen
embeddings (``models.projection``), once on every face of the crawl with its crawl label (what an
uncurated crawl gives a trainer) and once on the kept faces only. Both are verified on people held
out of both trainings (their kept faces, every genuine and impostor pair). The frozen base
embeddings are verified too, as the floor. ``export_projection`` writes the curated model with a
card that names the base recognizer and a calibration measured on the held-out people, so that
``--recognizer chain:FILE.onnx`` curates the next round.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.io.shards import ShardStore
from curate.schema import decode_embeddings
from curate.stats import unit

COLUMNS = ["image_id", "identity", "sha1", "embedding", "feat_norm", "det_score", "sharpness", "reason"]


def faces(run: str) -> pa.Table:
    """Faces of the run that were embedded, with the current scoring's ``keep``."""
    store = ShardStore.of(run)
    digest = store.current_scoring()
    if not digest:
        raise InputError(f"{run}: not scored yet")
    t = pq.ParquetDataset(store.completed_files("images")).read(columns=COLUMNS)
    t = t.filter(pc.and_(pc.equal(t["reason"], "ok"), pc.is_valid(t["identity"])))
    scores = pq.read_table(store.scores_file(digest), columns=["image_id", "keep", "reason"])
    keep = dict(zip(scores["image_id"].to_pylist(), scores["keep"].to_pylist()))
    return t.append_column("keep", pa.array([bool(keep.get(i)) for i in t["image_id"].to_pylist()]))


def held_out_people(identities: list[str], share: float, seed: int) -> set[str]:
    names = sorted(set(identities))
    n = max(2, int(round(share * len(names))))
    if len(names) - n < 2:
        raise InputError(f"{len(names)} identities: too few to hold {n} out and still train on 2 or more")
    return set(np.random.default_rng(seed).choice(names, n, replace=False).tolist())


def verification(emb: np.ndarray, labels: np.ndarray) -> dict:
    """Every pair of the faces: accuracy (10-fold best threshold) and TAR at FAR 1e-3 / 1e-2."""
    from models.eval import verify

    iu = np.triu_indices(len(emb), 1)
    sims = (emb @ emb.T)[iu]
    same = labels[iu[0]] == labels[iu[1]]
    order = np.random.default_rng(0).permutation(len(sims))  # folds must mix genuine and impostor pairs
    v = verify(sims[order], same[order]).as_dict()
    v.update({"genuine_pairs": int(same.sum()), "impostor_pairs": int((~same).sum())})
    return v


def compare(run: str, holdout: float = 0.2, seed: int = 0, epochs: int = 30, recipe: str = "curated",
            head: str = "arcface", t: pa.Table | None = None) -> tuple[dict, object, set[str]]:
    """(metrics of base / noisy-trained / curated-trained on held-out people, the curated
    projection, the held-out people). ``recipe`` ``k3``: the curated model is instead the paper's
    K=3->1 on the raw crawl (sub-center ArcFace, drop beyond 75 degrees at half the epochs, K=1)."""
    from models import projection

    t = faces(run) if t is None else t
    ids = np.array(t["identity"].to_pylist(), object)
    held = held_out_people(ids.tolist(), holdout, seed)
    emb = decode_embeddings(t["embedding"]).astype(np.float32)
    unit(emb, out=emb)
    keep = np.asarray(t["keep"].to_numpy(zero_copy_only=False), bool)
    test = np.isin(ids, list(held)) & keep
    train_all = ~np.isin(ids, list(held))
    train_kept = train_all & keep
    if test.sum() > 3000:  # every pair of 3,000 faces is 4.5M pairs: plenty, and bounded
        test[np.random.default_rng(seed).choice(np.flatnonzero(test), test.sum() - 3000, replace=False)] = False
    if test.sum() < 4 or len(set(ids[test])) < 2:
        raise InputError(f"{run}: the held-out people have {int(test.sum())} kept faces; too few to verify on")
    noisy, _ = projection.train(emb[train_all], ids[train_all], head=head, epochs=epochs, seed=seed)
    if recipe == "k3":
        curated, kept_mask = projection.train(emb[train_all], ids[train_all], head="subcenter", head_kwargs={"k": 3},
                                              epochs=epochs, seed=seed, drop_at=epochs // 2)
        curated_faces = int(kept_mask.sum())
    else:
        curated, _ = projection.train(emb[train_kept], ids[train_kept], head=head, epochs=epochs, seed=seed)
        curated_faces = int(train_kept.sum())
    labels = ids[test].astype(str)
    out = {"held_out_people": len(held), "held_out_faces": int(test.sum()), "recipe": recipe, "head": head,
           "epochs": epochs, "seed": seed,
           "train_faces": {"noisy": int(train_all.sum()), "curated": curated_faces},
           "base": verification(emb[test], labels),
           "noisy": verification(projection.apply(noisy, emb[test]), labels),
           "curated": verification(projection.apply(curated, emb[test]), labels)}
    return out, curated, held


def export_projection(proj, dest: str, run: str, held: set[str], seed: int = 0, t: pa.Table | None = None) -> dict:
    """Write ``dest`` (ONNX) and its card: the base recognizer, and a calibration of the chained
    model measured on the held-out people's faces (thresholds), with the base model's quality."""
    from curate.stats import calibrate
    from models import projection
    from models.cards import (
        card_path,
        detector_name,
        file_sha256,
        pick_calibration,
        write_card,
    )

    store = ShardStore.of(run)
    cfg = store.config()
    t = faces(run) if t is None else t
    ids = np.array(t["identity"].to_pylist(), object)
    m = np.isin(ids, list(held))
    emb = decode_embeddings(t["embedding"]).astype(np.float32)[m]
    unit(emb, out=emb)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    projection.export(proj, dest, emb.shape[1])
    sub = t.filter(pa.array(m))
    cal = calibrate(projection.apply(proj, emb), sub["feat_norm"].to_numpy().astype(np.float64), ids[m].tolist(), None,
                    seed, {k: sub[k].to_numpy(zero_copy_only=False).astype(np.float64) for k in ("sharpness", "det_score")},
                    sub["sha1"].to_pylist())
    base_card = store.recognizer_card() or {}
    base_cal, _ = pick_calibration(base_card, base_card.get("detector_id") or cfg.detect.detector)
    # the base model's quality: a projection of its embeddings keeps its norms and cues, and the
    # faces it matches are nearly the same ones (a match model of its own needs degraded copies)
    cal["quality"] = dict((base_cal or {}).get("quality") or {"signals": ["norm"]})
    cal["reference"] = {"faces": int(m.sum()), "identities": len(held), "set": os.path.abspath(run),
                        "note": "held-out people of the loop's round 0", "detector": base_card.get("detector_id")}
    card = {"name": "projection", "task": "recognition", "base": cfg.embed.recognizer, "sha256": file_sha256(dest),
            "input": {"template": "arcface"}, "licence": "same terms as the base model and the training data",
            "calibrations": {detector_name(base_card.get("detector_id") or cfg.detect.detector): cal}}
    write_card(card_path(dest), card)
    return card


def round_summary(run: str, truth: pa.Table | None = None) -> dict:
    """Kept, flags by reason and, with a benchmark truth, purity and clean retention."""
    store = ShardStore.of(run)
    digest = store.current_scoring()
    scores = pq.read_table(store.scores_file(digest))
    out = {"run": store.out, "images": len(scores), "kept": int(pc.sum(scores["keep"]).as_py() or 0),
           "reasons": {d["values"]: d["counts"] for d in pc.value_counts(scores["reason"]).to_pylist()},
           "model": (store.recognizer_card() or {}).get("model_id")}
    if truth is not None:
        from curate import benchmark as B

        m = B.evaluate(B.joined(run, truth))
        out.update({"purity": m["purity"], "clean_retention": m["clean_retention"],
                    "label_noise_precision": m["label_noise"]["precision"], "label_noise_recall": m["label_noise"]["recall"]})
    return out
