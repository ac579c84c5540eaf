"""Look before hours of work: what a crawl holds, and how long curating it will take.

``plan_summary`` describes a plan (``Source.plan()``: one row per input item): items, identities
and images per identity (a histogram), formats. ``dry_run`` adds the bytes to read and an ETA from
a short timed sample run through the real spine in this process (decode, detect, align, embed), and
writes nothing. ``curate run --dry-run`` prints it; the identity summary also heads a real run.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BINS = ((1, 1), (2, 4), (5, 9), (10, 49), (50, 99), (100, 499), (500, None))


def plan_summary(index: pa.Table) -> dict:
    return {"items": len(index), **identity_stats(index["identity"]), **formats(index["source"])}


def identity_stats(ids) -> dict:
    """Identities and images per identity (a histogram), where labels are known before reading
    (folders, tar, manifests); None for .rec / TSV plans."""
    n = len(ids)
    out = {"identities": None, "per_identity": None, "histogram": None}
    if n and ids.null_count < n:
        vc = pc.value_counts(ids.drop_null()).to_pylist()
        counts = np.array([d["counts"] for d in vc])
        top = int(counts.argmax())
        out["largest"] = {"identity": str(vc[top]["values"]), "images": int(counts[top])}
        out["identities"] = int(len(counts))
        out["per_identity"] = {"min": int(counts.min()), "median": float(np.median(counts)), "mean": round(float(counts.mean()), 2),
                               "max": int(counts.max())}
        out["histogram"] = {(f"{a}" if a == b else f"{a}-{b}" if b else f"{a}+"):
                            int(((counts >= a) & (counts <= (b or counts.max()))).sum()) for a, b in BINS}
        out["unlabelled"] = int(ids.null_count)
    return out


def formats(sources: pa.ChunkedArray) -> dict:
    ext = pc.struct_field(pc.extract_regex(sources.combine_chunks(), r"(?P<ext>\.[A-Za-z0-9]{1,5})(?:[#@].*)?$"), [0])
    exts = pc.value_counts(pc.utf8_lower(ext)).to_pylist()
    return {"formats": {(d["values"] or "(none)"): d["counts"] for d in sorted(exts, key=lambda d: -d["counts"])}}


def index_summary(path: str, sample_rows: int = 100_000) -> dict:
    """plan_summary of a stored plan (index.parquet) without holding its sources in memory: the
    identities read dictionary-encoded, the formats from the first ``sample_rows`` sources."""
    import pyarrow.parquet as pq

    ids = pq.read_table(path, columns=["identity"], read_dictionary=["identity"])["identity"]
    f = pq.ParquetFile(path)
    parts, n = [], 0
    for g in range(f.num_row_groups):
        if n >= sample_rows:
            break
        parts.append(f.read_row_group(g, columns=["source"])["source"])
        n += len(parts[-1])
    sources = pa.chunked_array([c for p in parts for c in p.chunks], pa.string())
    return {"items": len(ids), **identity_stats(ids), **formats(sources), "formats_sampled": len(sources) < len(ids)}


def summary_lines(s: dict) -> list[str]:
    lines = [f"plan         {s['items']} images"
             + (f" of {s['identities']} identities" if s["identities"] is not None else " (identities are read with the images)")]
    if s["per_identity"]:
        p = s["per_identity"]
        lines.append(f"per identity median {p['median']:g}, mean {p['mean']:g}, min {p['min']}, max {p['max']}; "
                     + ", ".join(f"{k}: {v}" for k, v in s["histogram"].items() if v))
    if s.get("unlabelled"):
        lines.append(f"unlabelled   {s['unlabelled']} items (recorded as no_identity)")
    lines.append("formats      " + ", ".join(f"{k} {v}" for k, v in list(s["formats"].items())[:8])
                 + (" (in a sample)" if s.get("formats_sampled") else ""))
    if s.get("empty_identities"):
        lines.append(f"empty        {s['empty_identities']} identity folders hold no file (no rows: nothing to curate there)")
    return lines + [f"WARNING      {w}" for w in layout_warnings(s)]


LARGE = 1000  # images: most of a crawl this big under one identity is a layout mistake, not a person
ONE = 50  # images: a crawl of one identity this big is likely the same mistake


def layout_warnings(s: dict) -> list[str]:
    """The plan looks like a layout mistake: one identity holds most of a large crawl (a tar made
    of the crawl's folder, ``tar -cf x.tar crawl``, files everything under 'crawl')."""
    big = s.get("largest")
    alone = s.get("identities") == 1 and s["items"] >= ONE
    if not big or not (alone or (s["items"] >= LARGE and big["images"] >= 0.5 * s["items"])):
        return []
    return [f"identity {big['identity']!r} holds {big['images']} of the {s['items']} images: if the identity folders "
            f"are one level down (a tar made with `tar -cf x.tar crawl`), plan from that level (`tar -C crawl -cf x.tar .`, "
            "or the folder itself)"]


def input_bytes(source, index: pa.Table, sample: int = 2000, seed: int = 0) -> tuple[int, bool]:
    """(bytes to read, estimated?): container files by size; loose files summed, or estimated from
    a sample of ``sample`` stats when there are more."""
    if source.kind in ("rec", "tsv", "tar", "parquet") and os.path.isfile(source.path):
        return os.path.getsize(source.path), False
    paths = index["source"].to_pylist()
    root = source.path if os.path.isdir(source.path) else os.path.dirname(source.path)
    pick = paths if len(paths) <= sample else [paths[i] for i in np.random.default_rng(seed).choice(len(paths), sample, replace=False)]
    sizes = []
    for p in pick:
        try:
            sizes.append(os.path.getsize(p if os.path.isabs(p) else os.path.join(root, p)))
        except OSError:
            sizes.append(0)
    total = float(np.sum(sizes)) * (len(paths) / max(len(pick), 1))
    return int(total), len(pick) < len(paths)


def dry_run(source, cfg, sample: int = 32, workers: int | None = None, threads: int = 1, seed: int = 0) -> dict:
    """The plan's summary, bytes, and seconds per image of a timed sample through the spine."""
    from curate.config import Resources
    from curate.pipeline import curate_batch, load_models

    index = source.plan()
    out = plan_summary(index)
    out["empty_identities"] = len(source.empty_identities)
    out["bytes"], out["bytes_estimated"] = input_bytes(source, index)
    n = min(sample, len(index))
    if n:
        models = load_models(cfg, threads=threads)
        take = np.sort(np.random.default_rng(seed).choice(len(index), n, replace=False))
        fetched = source.fetch(index.take(pa.array(take)), cfg.decode.max_bytes)
        curate_batch(fetched.slice(0, min(4, n)), models, cfg, Resources(batch_size=16))  # warm-up
        t0 = time.perf_counter()
        rows = curate_batch(fetched, models, cfg, Resources(batch_size=16))[0]
        per = (time.perf_counter() - t0) / n
        workers = workers or max(1, (os.cpu_count() or 1) // threads)
        out["sample"] = {"images": n, "seconds_per_image": round(per, 4), "workers": workers,
                         "reasons": {d["values"]: d["counts"] for d in pc.value_counts(rows["reason"]).to_pylist()}}
        out["eta_seconds"] = round(len(index) * per / workers + 15, 1)  # + start-up (Prefect, Ray, model loads)
    return out
