"""Per-model calibration: what a recognizer's angles, cosines and norms mean, measured once on a
labelled reference set and versioned with the model's card, so that thresholds and quality do not
depend on the crawl being curated (a crawl's own statistics are set by its noise).

``reference_rows`` runs the real spine (reader, decode, detect, align, embed) over an identity-folder
tree plus near-duplicate copies of some of its photos; ``calibrate`` turns the embeddings into
distributions and thresholds:

- ``norm``: quantiles of the raw feature norm (quality = percentile in these, the same in any run);
- ``angle_to_center``: angle of a face to its identity's template without it (genuine) and to other
  identities' templates (impostor): what ``far_from_dominant`` thresholds;
- ``pair_cos``: one face against another, same person or not (verification, TAR at FAR);
- ``duplicate_cos``: a photo against its re-encoded, resized, cropped or mirrored copy;
- ``center_cos``: templates of two halves of one identity vs templates of two identities: what
  ``identity_merge_candidate`` thresholds;
- ``thresholds``: the defaults derived from those (see ``derive_thresholds``).

Distributions are stored as quantiles on ``GRID`` (fine at both tails).
"""

from __future__ import annotations

import datetime
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import stats
from curate.schema import decode_embeddings
from curate.stats import calibrate

# -- the reference set, through the real spine ----------------------------------------------------


def near_duplicate(data: bytes, rng: np.random.Generator) -> bytes:
    """A re-saved copy of a photo as crawls hold them: re-encoded (JPEG q30-70), resized (0.5-0.9),
    cropped by up to 6% a side and, half the time, mirrored."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    m = rng.uniform(0, 0.06, 4)
    img = img.crop((int(w * m[0]), int(h * m[1]), int(w * (1 - m[2])), int(h * (1 - m[3]))))
    s = rng.uniform(0.5, 0.9)
    img = img.resize((max(int(img.width * s), 16), max(int(img.height * s), 16)), Image.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(30, 71)))
    return buf.getvalue()


@dataclass
class Reference:
    """The reference set through the spine: ``rows`` (kept photos, then their near-duplicate
    copies), ``dup_pairs`` (M, 2) row indices (photo, copy), and ``degraded``: the spine's rows for
    degraded copies of a sample of the photos (every copy, face found or not), with ``original``
    (row index of the photo) and ``kind`` (curate.degrade)."""

    rows: pa.Table
    dup_pairs: np.ndarray
    degraded: pa.Table | None = None


def _fetched(rows: dict[str, list]) -> pa.Table:
    from curate.io.sources import FETCHED

    n = len(rows["data"])
    return pa.table({**rows, "reason": [None] * n, "reason_detail": [None] * n, "resolved_path": [None] * n}, schema=FETCHED)


def reference_rows(root: str, models, cfg, batch_size: int = 32, duplicates: int = 300, degraded: int = 200,
                   seed: int = 0, on_batch=None) -> Reference:
    """Run the spine over the identity folders under ``root``, plus near-duplicate copies of up to
    ``duplicates`` of its photos and, for up to ``degraded`` photos, one copy per degradation."""
    from PIL import Image

    from curate.config import Resources
    from curate.degrade import DEGRADATIONS
    from curate.io.sources import FolderSource
    from curate.pipeline import curate_batch
    from curate.stages.decode import decode_one

    src = FolderSource(root)
    index = src.plan()
    res = Resources(batch_size=batch_size)
    parts, data = [], {}

    def run(fetched: pa.Table) -> pa.Table:
        out = pa.concat_tables([curate_batch(fetched.slice(s, batch_size), models, cfg, res)[0]
                                for s in range(0, len(fetched), batch_size)])
        if on_batch:
            on_batch(len(fetched))
        return out

    for s in range(0, len(index), batch_size):
        fetched = src.fetch(index.slice(s, batch_size), cfg.decode.max_bytes)
        data.update(zip(fetched["source"].to_pylist(), fetched["data"].to_pylist()))
        parts.append(run(fetched))
    rows = pa.concat_tables(parts)
    rows = rows.filter(pc.and_(rows["keep"], pc.is_valid(rows["identity"])))
    rng = np.random.default_rng(seed)
    srcs, ids = rows["source"].to_pylist(), rows["identity"].to_pylist()
    pairs = np.zeros((0, 2), np.int64)
    if duplicates and len(rows):
        pick = sorted(rng.choice(len(rows), min(duplicates, len(rows)), replace=False).tolist())
        copies = {"item": [len(index) + k for k in range(len(pick))], "source": [f"duplicate-of:{srcs[i]}" for i in pick],
                  "identity": [ids[i] for i in pick], "data": [near_duplicate(data[srcs[i]], rng) for i in pick]}
        dup_rows = run(_fetched(copies))
        ok = np.asarray(dup_rows["keep"].to_numpy(zero_copy_only=False))
        pairs = np.array([(i, len(rows) + j) for j, i in enumerate(np.array(pick)[ok])], np.int64).reshape(-1, 2)
        rows = pa.concat_tables([rows, dup_rows.filter(dup_rows["keep"])])
    bad = None
    if degraded and len(rows):
        pick = sorted(rng.choice(len(rows) - len(pairs), min(degraded, len(rows) - len(pairs)), replace=False).tolist())
        boxes = rows["bbox"].to_pylist()
        copies = {"item": [], "source": [], "identity": [], "data": []}
        origin, kinds = [], []
        for i in pick:
            pixels, _ = decode_one(data[srcs[i]], cfg.decode)
            for kind, fn in DEGRADATIONS.items():
                buf = io.BytesIO()
                Image.fromarray(fn(pixels, tuple(boxes[i]), rng)).save(buf, "JPEG", quality=95)
                copies["item"].append(len(index) + len(copies["item"]))
                copies["source"].append(f"{kind}-of:{srcs[i]}")
                copies["identity"].append(ids[i])
                copies["data"].append(buf.getvalue())
                origin.append(i)
                kinds.append(kind)
        bad = run(_fetched(copies)).append_column("original", pa.array(origin, pa.int64())).append_column(
            "kind", pa.array(kinds, pa.string()))
    return Reference(rows, pairs, bad)


def match_rates(emb: np.ndarray, codes: np.ndarray, bad: np.ndarray, original: np.ndarray, cos: float) -> np.ndarray:
    """Each face's share of its person's other photos it is verified against (cosine above ``cos``):
    the clean faces ``emb`` (N, D) unit with ``codes``, then the copies ``bad`` (M, D) unit of the
    faces ``original`` (M,), each against its person's photos but its original. NaN for a face
    with no other photo of its person."""
    from curate.stages.dedup import identity_rows

    out = np.full(len(emb) + len(bad), np.nan)
    by = np.argsort(codes[original], kind="stable")  # the copies, by their person
    of = codes[original][by]
    for members in identity_rows(codes):  # a person with one photo has no other to verify against
        hit = emb[members] @ emb[members].T > cos
        np.fill_diagonal(hit, False)
        out[members] = hit.sum(1) / (len(members) - 1)
        k = codes[members[0]]
        copies = by[np.searchsorted(of, k) : np.searchsorted(of, k, side="right")]
        if len(copies):
            hit = bad[copies] @ emb[members].T > cos
            hit[np.arange(len(copies)), np.searchsorted(members, original[copies])] = False
            out[len(emb) + copies] = hit.sum(1) / (len(members) - 1)
    return out


def match_model(cal: dict, emb: np.ndarray, codes: np.ndarray, bad: np.ndarray, original: np.ndarray,
                values: dict[str, np.ndarray], seed: int = 0, probe: bool = True) -> dict:
    """``quality.match`` of a calibration (curate.quality): the chance that a face is verified against
    another photo of its person at the calibration's cosine for quality.FMR (the EDC's), fitted on the clean
    faces and the copies (arguments as ``match_rates``; ``values``: each signal over both, in that
    order), and the thresholds of ``unidentifiable``. With ``probe``, the embedding itself is a
    candidate signal (curate.quality.probe), its held-out logits standing in for it in the fit."""
    from curate import quality

    cos = stats.at(cal["pair_cos"]["impostor"], 1 - quality.FMR, cal.get("grid", stats.GRID))
    rate = match_rates(emb, codes, bad, original, cos)
    ok = np.isfinite(rate)
    person = np.concatenate([codes, codes[original]])
    x = np.concatenate([emb, bad])
    values = {k: np.asarray(v, np.float64) for k, v in values.items()}
    if probe and len(np.unique(person[ok])) >= 5:  # the embedding's own say, as for people the probe never saw
        values["embedding"] = np.zeros(len(x))
        values["embedding"][ok] = quality.probe_logits(x[ok], rate[ok], person[ok], seed=seed)
    clean = np.zeros(len(rate), bool)
    clean[: len(emb)] = True
    model = quality.fit({k: v[ok] for k, v in values.items()}, rate[ok], x[ok], person[ok], seed=seed, clean=clean[ok])
    if "embedding" in model["signals"]:
        model["probe"] = quality.probe(x[ok], rate[ok])
    p = quality.probability(model, values)
    model.update(quality.thresholds(p[ok], rate[ok], clean[ok]))
    model["operating_point"] = (f"verified against another photo of the person at cosine {cos:.3f}, "
                                f"the reference's false-match rate {quality.FMR:g}")
    copies = ~clean & ok
    model["copies_matched"] = round(float(rate[copies].mean()), 4) if copies.any() else None
    return model


def _signals(t: pa.Table) -> dict[str, np.ndarray]:
    """The quality signals of spine rows (curate.quality.FEATURES), as scoring reads them."""
    from curate.curation import pose_of, signals_of

    yaw, pitch, _ = pose_of(t)
    return {**signals_of(t), "yaw": yaw, "pitch": pitch}


def quality_check(ref: Reference, cal: dict, seed: int = 0) -> dict:
    """The calibration's ``quality``: the match model (curate.quality) fitted on the reference's
    faces and its degraded copies with a face found; for each signal alone, the share of (photo,
    degraded copy) pairs where the copy scores lower (AUC), and the share of copies still found."""
    rows = ref.rows
    base = np.ones(len(rows), bool)
    base[ref.dup_pairs[:, 1]] = False  # re-saved copies are the duplicate distribution's, not quality's
    d = ref.degraded if ref.degraded is not None else rows.slice(0, 0).append_column(
        "original", pa.array([], pa.int64())).append_column("kind", pa.array([], pa.string()))
    kept = d.filter(d["keep"])
    # the originals' positions among the clean faces
    pos = np.cumsum(base) - 1
    orig = pos[kept["original"].to_numpy()]
    clean = rows.filter(pa.array(base))
    emb = decode_embeddings(clean["embedding"]).astype(np.float64)
    bad = decode_embeddings(kept["embedding"]).astype(np.float64) if len(kept) else np.zeros((0, emb.shape[1]))
    codes = np.unique(np.asarray(clean["identity"].to_pylist(), object).astype(str), return_inverse=True)[1]
    sc, sb = _signals(clean), _signals(kept)
    values = {k: np.concatenate([sc[k], sb[k]]) for k in sc}
    model = match_model(cal, stats.unit(emb), codes, stats.unit(bad), orig, values, seed)
    kinds = np.array(kept["kind"].to_pylist(), object)
    auc = {name: {k: round(stats.auc(sc[name][orig][kinds == k], sb[name][kinds == k]), 3) for k in sorted(set(kinds))}
           for name in ("norm", "det_score", "sharpness")}
    all_kinds = np.array(d["kind"].to_pylist(), object)
    found = {k: round(float(np.mean(np.asarray(d["keep"].to_numpy(zero_copy_only=False))[all_kinds == k])), 3)
             for k in sorted(set(all_kinds))}
    return {"signals": model["signals"], "match": model, "auc": auc, "face_found": found, "copies": len(d)}


def calibrate_reference(ref: Reference, seed: int = 0) -> dict:
    """The calibration of a reference set through the spine, stamped with the models that made
    it (det_score quantiles mean something only for the same detector), quality signals chosen
    by measurement."""
    rows = ref.rows
    emb = decode_embeddings(rows["embedding"]).astype(np.float32)
    norms = rows["feat_norm"].to_numpy(zero_copy_only=False)
    cues = {k: rows[k].to_numpy(zero_copy_only=False) for k in ("sharpness", "det_score")}
    cal = calibrate(emb, norms, rows["identity"].to_pylist(), ref.dup_pairs, seed, cues, rows["sha1"].to_pylist())
    det = rows["detector_id"][0].as_py() if len(rows) else None
    cal["cues"].get("det_score", {})["detector"] = det
    cal["reference"].update({"detector": det, "recognizer": rows["model_id"][0].as_py() if len(rows) else None,
                             "date": datetime.date.today().isoformat()})
    cal["quality"] = quality_check(ref, cal, seed)
    return cal


# -- a trained model, on people held out of its training ----------------------------------------


def _held_out_rows(files: list[str], identities: set[str]) -> pa.Table | None:
    """Kept rows with a crop of the given identities, from the shards the model was trained on."""
    import pyarrow.parquet as pq

    cols = ["identity", "crop", "keep", "sha1", "det_score", "sharpness", "detector_id"]
    wanted = pa.array(sorted(identities), pa.string())
    parts = []
    for f in files:
        t = pq.read_table(f, columns=cols)
        ok = pc.and_(pc.and_(pc.fill_null(t["keep"], False), pc.is_valid(t["crop"])), pc.is_in(t["identity"], wanted))
        parts.append(t.filter(ok))
    return pa.concat_tables(parts) if parts else None


def calibrate_held_out(embed, files: list[str], identities: list[str], seed: int = 0) -> dict | None:
    """The calibration of a trained model on the kept crops of identities held out of its
    training (in the Parquet shards ``files``), with re-encoded and mirrored copies as
    near-duplicates and degraded copies to check whether its norm carries quality. ``embed``:
    RGB uint8 crops -> (N, D) raw features (models.export.raw_features of a backbone). None when
    fewer than 3 identities or 20 faces are held out."""
    from PIL import Image

    from curate.degrade import DEGRADATIONS
    from models.eval import decode_image

    rows = _held_out_rows(files, set(identities)) if identities else None
    if rows is None or len(rows) < 20 or len(set(rows["identity"].to_pylist())) < 3:
        return None
    rng = np.random.default_rng(seed)
    imgs = [decode_image(c) for c in rows["crop"].to_pylist()]
    raw = embed(imgs)
    pick = rng.choice(len(imgs), min(100, len(imgs)), replace=False)
    copies = []
    for i in pick:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(imgs[i][:, ::-1] if rng.random() < 0.5 else imgs[i])).save(
            buf, "JPEG", quality=int(rng.integers(30, 71)))
        copies.append(decode_image(buf.getvalue()))
    raw_dup = embed(copies)
    emb = np.concatenate([raw, raw_dup])
    norms = np.linalg.norm(emb, axis=1)
    labels = rows["identity"].to_pylist() + [rows["identity"][int(i)].as_py() for i in pick]
    pairs = np.stack([pick, len(raw) + np.arange(len(pick))], 1)
    pad = lambda c: np.concatenate([rows[c].to_numpy(zero_copy_only=False).astype(np.float64), np.full(len(pick), np.nan)])  # noqa: E731
    cal = calibrate(emb / np.maximum(norms, 1e-12)[:, None], norms, labels, pairs, seed,
                    {"sharpness": pad("sharpness"), "det_score": pad("det_score")},
                    rows["sha1"].to_pylist() + [None] * len(pick))
    # quality: the match model on the crops and degraded copies of them (no detector here: the crop
    # itself is degraded, so the norm is the one signal every face has)
    kinds = [k for k in DEGRADATIONS if k != "extreme_crop"]
    bad_raw = embed([DEGRADATIONS[k](imgs[i], None, rng) for i in pick for k in kinds])
    bad_norm = np.linalg.norm(bad_raw, axis=1)
    n = len(raw)
    codes = np.unique(np.asarray(labels[:n], object).astype(str), return_inverse=True)[1]
    model = match_model(cal, stats.unit(raw.astype(np.float64)), codes, stats.unit(bad_raw.astype(np.float64)),
                        np.repeat(pick, len(kinds)), {"norm": np.concatenate([norms[:n], bad_norm])}, seed)
    orig = np.repeat(norms[pick], len(kinds))
    auc = {k: round(stats.auc(orig[j::len(kinds)], bad_norm[j::len(kinds)]), 3) for j, k in enumerate(kinds)}
    cal["quality"] = {"signals": model["signals"], "match": model, "auc": {"norm": auc},
                      "note": "degraded crops of held-out identities (no detection pass)"}
    det = rows["detector_id"][0].as_py()
    cal["cues"]["det_score"]["detector"] = det
    cal["reference"].update({"set": f"{len(set(labels))} identities held out of training", "detector": det})
    return cal
