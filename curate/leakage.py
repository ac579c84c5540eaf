"""Benchmark leakage: do the evaluation sets' people or photos sit in the training crawl?

The evaluation faces are embedded with the run's own models: an identity-folder tree goes through
the spine (detect, align, embed); an insightface ``.bin`` or an LFW ``pairs.txt`` holds aligned
112x112 crops, embedded directly. Each crawl face is compared with each evaluation face:

- ``same_image``: cosine at or above the card's duplicate threshold (or identical bytes);
- ``same_person``: cosine above the card's impostor pair cosine at FMR 1e-4 (``pair_cos``).

A crawl identity is leaked when it holds a same-image match, or ``min_faces`` same-person matches
of one evaluation identity, or (for labelled evaluation sets) its template matches the evaluation
identity's template above the card's merge threshold (the same question as two labels being one
person). Only the faces the current scoring keeps count: a rejected face is not trained on. What
is left out of an export (``scope``): the whole identity when its template matches or at least half
its kept faces do (the person is in the evaluation set); otherwise only the matching faces (a
stray photo of an evaluation person, or one photo copied into it, under another label).
Results, one set of rows per evaluation set (a later check of the same set replaces its rows, of
another set adds to them): ``OUT/leakage/faces.parquet`` and ``identities.parquet``; ``curate
export --exclude-leaked`` leaves every set's leaked identities out.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.files import atomic_write
from curate.io.shards import ShardStore
from curate.schema import decode_embeddings
from curate.stages.dedup import unit_rows


def eval_faces(path: str, models, cfg, root: str | None = None) -> dict:
    """{emb (M, D) unit, label (M,) or None, name (M,), sha1 (M,)} of an evaluation set."""
    from curate.config import Resources
    from curate.pipeline import curate_batch

    if os.path.isdir(path):
        from curate.io.sources import FolderSource

        src = FolderSource(path)
        index = src.plan()
        # photos directly in the folder (no identity folders): unlabelled faces, checked image by image
        at = index.schema.get_field_index("identity")
        index = index.set_column(at, "identity", pc.fill_null(index["identity"], UNLABELLED))
        parts = []
        for s in range(0, len(index), 64):
            fetched = src.fetch(index.slice(s, 64), cfg.decode.max_bytes)
            parts.append(curate_batch(fetched, models, cfg, Resources(batch_size=16))[0])
        rows = pa.concat_tables(parts) if parts else None
        if rows is None or not len(rows):
            raise InputError(f"{path}: no images")
        rows = rows.filter(rows["keep"])
        if not len(rows):
            raise InputError(f"{path}: no face found in its {len(index)} files")
        labels = [None if x == UNLABELLED else x for x in rows["identity"].to_pylist()]
        return {"emb": unit_rows(decode_embeddings(rows["embedding"])),
                "label": np.array(labels, object) if any(x is not None for x in labels) else None,
                "name": rows["source"].to_pylist(), "sha1": rows["sha1"].to_pylist()}
    from models.eval import decode_image, load_bin, load_pairs_txt, read_image_bytes

    if path.endswith(".bin"):
        images, _ = load_bin(path)
        names = [f"{os.path.basename(path)}#{i}" for i in range(len(images))]
    else:
        paths, _ = load_pairs_txt(path, root or os.path.dirname(os.path.abspath(path)))
        paths = list(dict.fromkeys(paths))  # each image once
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise InputError(f"{path}: {len(missing)} images it names are missing (e.g. {missing[0]}); pass --root")
        images, names = [read_image_bytes(p) for p in paths], paths
    crops = np.stack([_crop(decode_image(b), models.recognizer.size) for b in images])
    emb = np.concatenate([models.recognizer.embed(crops[s : s + 64]) for s in range(0, len(crops), 64)])
    return {"emb": unit_rows(emb), "label": None, "name": names, "sha1": [hashlib.sha1(b).hexdigest() for b in images]}


UNLABELLED = "\x00unlabelled"  # the identity given to photos directly in an evaluation folder


def _crop(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def thresholds(cal: dict | None) -> dict:
    if not cal:
        raise InputError("the run's recognizer has no calibration: leakage thresholds come from its card "
                         "(run `curate calibrate` for it)")
    grid = list(cal.get("grid", []))
    imp = cal["pair_cos"]["impostor"]
    i = grid.index(0.9999) if 0.9999 in grid else len(imp) - 2
    return {"same_image": float(cal["thresholds"]["dup_cos"]), "same_person": float(imp[i]),
            "template": float(cal["thresholds"]["merge_cos"])}


def find(run: str, ev: dict, cal: dict | None, min_faces: int = 2, chunk: int = 65536) -> tuple[pa.Table, pa.Table, dict]:
    """(face matches, leaked identities, thresholds) of the run's embedded faces against ``ev``."""
    store = ShardStore.of(run)
    th = thresholds(cal)
    t = pq.ParquetDataset(store.completed_files("images")).read(columns=["image_id", "identity", "sha1", "embedding", "reason"])
    t = t.filter(pc.and_(pc.equal(t["reason"], "ok"), pc.is_valid(t["identity"])))
    digest = store.current_scoring()
    if digest:  # the faces the scoring keeps (reviews included): a rejected face is not trained on
        kept = pq.read_table(store.scores_file(digest), columns=["image_id", "keep"])
        t = t.filter(pc.is_in(t["image_id"], value_set=kept["image_id"].filter(kept["keep"])))
    ids, img_ids, sha = t["identity"].to_pylist(), t["image_id"].to_pylist(), t["sha1"].to_pylist()
    ev_sha = {s: j for j, s in enumerate(ev["sha1"])}
    rows = {"image_id": [], "identity": [], "eval_face": [], "eval_identity": [], "cos": [], "kind": []}
    for s in range(0, len(t), chunk):
        emb = unit_rows(decode_embeddings(t["embedding"].slice(s, chunk)))
        sims = emb @ ev["emb"].T
        for a, b in zip(*np.nonzero(sims > th["same_person"])):
            i = s + int(a)
            rows["image_id"].append(img_ids[i])
            rows["identity"].append(ids[i])
            rows["eval_face"].append(ev["name"][b])
            rows["eval_identity"].append(None if ev["label"] is None else ev["label"][b])
            rows["cos"].append(float(sims[a, b]))
            rows["kind"].append("same_image" if sims[a, b] >= th["same_image"] else "same_person")
    matched = set(rows["image_id"])
    for i, h in enumerate(sha):  # identical bytes, whatever the embedding says
        if h in ev_sha and img_ids[i] not in matched:
            b = ev_sha[h]
            for k, v in zip(rows, (img_ids[i], ids[i], ev["name"][b], None if ev["label"] is None else ev["label"][b],
                                   1.0, "same_image")):
                rows[k].append(v)
    faces = pa.table(rows, schema=pa.schema([("image_id", pa.string()), ("identity", pa.string()), ("eval_face", pa.string()),
                                            ("eval_identity", pa.string()), ("cos", pa.float32()), ("kind", pa.string())]))
    leaked = {}
    for r in faces.to_pylist():
        key = (r["identity"], r["eval_identity"])
        d = leaked.setdefault(key, {"faces": set(), "same_image": 0, "max_cos": 0.0})
        d["faces"].add(r["image_id"])
        d["same_image"] += r["kind"] == "same_image"
        d["max_cos"] = max(d["max_cos"], r["cos"])
    templates = {}
    if ev["label"] is not None:  # identity templates: the merge question across the two sets (labelled faces)
        names = np.array(ids, object)
        mine = np.isin(names, list({k[0] for k in leaked}))  # only the matched identities' faces, decoded again
        emb_m, names_m = unit_rows(decode_embeddings(t["embedding"].filter(pa.array(mine)))), names[mine]
        crawl_t = {n: unit_rows(emb_m[names_m == n].mean(0, keepdims=True))[0] for n in set(names_m)}
        for lab in {x for x in ev["label"] if x is not None}:
            e = unit_rows(ev["emb"][ev["label"] == lab].mean(0, keepdims=True))[0]
            for n, c in crawl_t.items():
                templates[(n, lab)] = float(c @ e)
    kept = dict(zip(*np.unique(np.array(ids, object).astype(str), return_counts=True))) if ids else {}
    out = []
    for (ident, lab), d in leaked.items():
        tcos = templates.get((ident, lab))
        template = tcos is not None and tcos >= th["template"]
        why = ("same_image" if d["same_image"] else "template" if template
               else "same_person" if len(d["faces"]) >= min_faces else None)
        if why:
            whole = template or 2 * len(d["faces"]) >= kept.get(ident, 0)
            out.append({"identity": ident, "eval_identity": lab, "faces_matched": len(d["faces"]),
                        "kept_faces": int(kept.get(ident, 0)), "same_image": d["same_image"],
                        "max_cos": round(d["max_cos"], 4), "template_cos": None if tcos is None else round(tcos, 4),
                        "why": why, "scope": "identity" if whole else "faces"})
    identities = pa.Table.from_pylist(out, schema=pa.schema([
        ("identity", pa.string()), ("eval_identity", pa.string()), ("faces_matched", pa.int64()), ("kept_faces", pa.int64()),
        ("same_image", pa.int64()), ("max_cos", pa.float64()), ("template_cos", pa.float64()), ("why", pa.string()),
        ("scope", pa.string())]))
    return faces, identities, th


def write(run: str, faces: pa.Table, identities: pa.Table, meta: dict) -> str:
    """Add this check's rows (column ``against``: the evaluation set) to the run's leakage results,
    replacing an earlier check's rows of the same sets."""
    store = ShardStore.of(run)
    d = store.leakage_dir()
    os.makedirs(d, exist_ok=True)
    sets = pa.array(sorted(set(faces["against"].to_pylist()) | set(identities["against"].to_pylist())), pa.string())
    old_meta: dict = {}

    def merged(name: str, new: pa.Table) -> pa.Table:  # the other sets' earlier rows, then this check's
        p = os.path.join(d, f"{name}.parquet")
        if not os.path.exists(p):
            return new
        old = pq.read_table(p)
        old_meta.update({k.decode(): json.loads(v) for k, v in (old.schema.metadata or {}).items() if k != b"ARROW:schema"})
        old = old.filter(pc.invert(pc.is_in(old["against"], value_set=sets))).replace_schema_metadata(None)
        return pa.concat_tables([old.cast(new.schema), new]) if len(old) else new

    faces, identities = merged("faces", faces), merged("identities", identities)
    meta = {**old_meta, **meta, "against": sorted(set(old_meta.get("against", [])) | set(meta.get("against", [])))}
    md = {k.encode(): json.dumps(v).encode() for k, v in meta.items()}
    atomic_write(os.path.join(d, "faces.parquet"), lambda tmp: pq.write_table(faces.replace_schema_metadata(md), tmp))
    atomic_write(os.path.join(d, "identities.parquet"),
                 lambda tmp: pq.write_table(identities.replace_schema_metadata(md), tmp))
    return d


def leaked(run: str) -> tuple[set[str], set[str]]:
    """(identities left out whole, image_ids left out one by one) over every evaluation set checked."""
    d = ShardStore.of(run).leakage_dir()
    p = os.path.join(d, "identities.parquet")
    if not os.path.exists(p):
        raise InputError(f"{run}: no leakage check yet (run `curate leakage {run} --against ...`)")
    ids = pq.read_table(p)
    scope = ids["scope"].to_pylist() if "scope" in ids.column_names else ["identity"] * len(ids)  # an older check
    whole = {i for i, s in zip(ids["identity"].to_pylist(), scope) if s == "identity"}
    partial = {(i, e, a) for i, e, a, s in zip(ids["identity"].to_pylist(), ids["eval_identity"].to_pylist(),
                                               ids["against"].to_pylist(), scope) if s == "faces"}
    faces = pq.read_table(os.path.join(d, "faces.parquet"))
    images = {r["image_id"] for r in faces.to_pylist()
              if (r["identity"], r["eval_identity"], r["against"]) in partial and r["identity"] not in whole}
    return whole, images
