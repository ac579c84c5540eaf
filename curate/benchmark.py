"""The curation benchmark: an MS1MV0-style noisy crawl built from real faces with the truth
recorded per file, curated by the real pipeline, and scored against that truth.

``build_crawl`` writes ``dest/<label>/<file>`` from an identity-folder tree of real faces and
returns the truth (schema ``TRUTH``), one row per written file:

- ``clean``           a person's own photo under their label;
- ``split``           a person's own photo under a second label (one person crawled twice);
- ``flip``            another in-set person's photo (closed-set label noise);
- ``distractor``      a photo of someone kept out of the set (open-set label noise);
- ``duplicate``       a copy of a clean photo, of one kind (``detail``, COPY_KINDS): re-encoded,
                      resized, mirrored, cropped or captioned;
- ``group``           a group photo: a clean photo of the labelled person pasted beside 1-3 photos of
                      other people at varied sizes (``detail``: the person's box, x1,y1,x2,y2);
- ``unidentifiable``  a degraded copy (curate.degrade) of a clean photo;
- ``nonface``         a photo with no face (scikit-image's sample images, cropped).

People are split into in-set (they have labels) and open-set (distractor sources only); every
photo appears once, so a flip is never also a copy of a clean file. ``evaluate`` joins a curated
run with the truth and measures what the issue asks: per kind, the reasons it got; kept-set
purity and clean retention; precision and recall of each flag; the error-versus-discard curve of
each quality signal; and, with ``sweep``, the precision/recall trade-off of each threshold.

Longer than 400 lines because the crawl builder, the metrics, the sweeps and the peer baseline
all read and write the one truth table, whose layout they share.
"""

from __future__ import annotations

import fnmatch
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import reasons
from curate.errors import InputError
from curate.io.sources import IMAGE_EXT
from curate.stats import unit

TRUTH = pa.schema([
    ("source", pa.string()),  # path under the crawl root, as images.source
    ("label", pa.string()),  # the folder it was filed under
    ("person", pa.string()),  # who is in it (the source identity); null for non-faces
    ("kind", pa.string()),
    ("original", pa.string()),  # duplicate / unidentifiable: the source of the photo it copies
    ("detail", pa.string()),  # the degradation, the flip's target, ...
])
KINDS = ("clean", "split", "flip", "distractor", "duplicate", "group", "unidentifiable", "nonface")
COPY_KINDS = ("reencode", "resize", "mirror", "crop", "caption")
LABEL_NOISE = ("flip", "distractor")  # truth kinds (the flags that catch them: LABEL_FLAGS)
LABEL_FLAGS = reasons.LABEL_NOISE
SCORING_REASONS = reasons.SCORING
JUNK = ("unidentifiable", "nonface")  # not usable whatever its label
NON_FACES = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass", "gravel",
             "coins", "horse", "moon", "page", "text", "retina", "colorwheel", "logo", "checkerboard", "clock")


@dataclass(frozen=True)
class Noise:
    """Rates are shares of the clean photos written (seeded); ``split`` counts people."""

    flip: float = 0.05
    distractor: float = 0.03
    duplicate: float = 0.05
    group: float = 0.03
    unidentifiable: float = 0.03
    nonface: float = 0.01
    split: int = 2
    open_set: float = 0.15  # share of people kept out of the set, as distractor sources
    min_photos: int = 4  # people with fewer photos are not used
    max_photos: int = 20  # photos per person at most
    exclude: tuple[str, ...] = ()  # folder-name patterns (fnmatch) left out: sources with label noise of their own

    def __post_init__(self):
        from curate.errors import ConfigError

        object.__setattr__(self, "exclude", tuple(self.exclude))  # a list from JSON parameters
        for k in ("flip", "distractor", "duplicate", "group", "unidentifiable", "nonface", "open_set"):
            if not 0 <= getattr(self, k) < 1:
                raise ConfigError(f"noise rate {k} must be in [0, 1)")
        if self.split < 0:
            raise ConfigError("--split must be >= 0")
        if self.min_photos < 3:
            raise ConfigError(f"--min-photos {self.min_photos}: a person needs 3 photos or more (one to flip away, two to keep)")
        if self.max_photos < self.min_photos:
            raise ConfigError(f"--max-photos {self.max_photos} is below --min-photos {self.min_photos}: lower --min-photos too")


def _photos(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))


def _non_faces(n: int, rng: np.random.Generator) -> list[bytes]:
    from PIL import Image
    from skimage import data

    out = []
    for k in range(n):
        name = NON_FACES[k % len(NON_FACES)]
        img = np.asarray(getattr(data, name)())
        img = (img * 255).astype(np.uint8) if img.dtype == bool else img.astype(np.uint8)
        img = np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
        h, w = img.shape[:2]
        s = rng.uniform(0.6, 1.0)
        y, x = int(rng.integers(0, h - int(h * s) + 1)), int(rng.integers(0, w - int(w * s) + 1))
        buf = io.BytesIO()
        Image.fromarray(img[y : y + int(h * s), x : x + int(w * s)]).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def copy_photo(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """A copy of a photo as crawls hold them, of one kind: re-encoded (JPEG q30-90), resized
    (0.3-0.9, then JPEG q85), mirrored, cropped (up to 10% a side) or captioned (a text band over
    the bottom 12%)."""
    from PIL import Image, ImageDraw, ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    q = int(rng.integers(30, 91)) if kind == "reencode" else 85
    if kind == "resize":
        s = rng.uniform(0.3, 0.9)
        img = img.resize((max(int(w * s), 16), max(int(h * s), 16)), Image.BICUBIC)
    elif kind == "mirror":
        img = ImageOps.mirror(img)
    elif kind == "crop":
        m = rng.uniform(0, 0.10, 4)
        img = img.crop((int(w * m[0]), int(h * m[1]), int(w * (1 - m[2])), int(h * (1 - m[3]))))
    elif kind == "caption":
        band = max(int(h * 0.12), 8)
        ImageDraw.Draw(img).rectangle([0, h - band, w, h], fill=(20, 20, 20))
        ImageDraw.Draw(img).text((4, h - band + 1), "(c) photo agency www.example.com", fill=(255, 255, 255))
    elif kind != "reencode":
        raise ValueError(f"copy kind {kind!r}: one of {COPY_KINDS}")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def group_photo(label_photo: bytes, others: list[bytes], rng: np.random.Generator) -> tuple[bytes, tuple]:
    """The labelled person's photo pasted among ``others`` (left to right in random order, each
    scaled to 55-100% of the canvas height) -> (JPEG bytes, the person's box x1, y1, x2, y2)."""
    from PIL import Image, ImageOps

    height = 300
    ims = [ImageOps.exif_transpose(Image.open(io.BytesIO(b))).convert("RGB") for b in [label_photo, *others]]
    order = rng.permutation(len(ims))
    placed, x = [], 0
    for k in order:
        im = ims[k]
        hh = int(height * rng.uniform(0.55, 1.0))
        im = im.resize((max(int(im.width * hh / im.height), 8), hh), Image.BICUBIC)
        y = int(rng.integers(0, height - hh + 1))
        placed.append((k, im, x, y))
        x += im.width + int(rng.integers(0, 20))
    canvas = Image.new("RGB", (x, height), (128, 128, 128))
    box = None
    for k, im, px, py in placed:
        canvas.paste(im, (px, py))
        if k == 0:
            box = (px, py, px + im.width, py + im.height)
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue(), box


def build_crawl(src: str, dest: str, noise: Noise = Noise(), seed: int = 0, detector=None) -> pa.Table:
    """Write the noisy crawl under ``dest`` (which must not exist) and return its truth.
    ``detector`` (optional, a models.detectors detector) places occlusions and crops on the face."""
    from PIL import Image

    from curate.config import DecodeConfig
    from curate.degrade import DEGRADATIONS
    from curate.stages.decode import decode_one

    root, out = Path(src), Path(dest)
    if not root.is_dir():
        raise InputError(f"{src}: no such identity-folder tree")
    if out.exists():
        raise InputError(f"{dest} exists; a benchmark crawl is built into a new directory")
    rng = np.random.default_rng(seed)
    people = [d for d in sorted(root.iterdir()) if d.is_dir() and len(_photos(d)) >= noise.min_photos
              and not any(fnmatch.fnmatch(d.name, p) for p in noise.exclude)]
    if len(people) < 3:
        raise InputError(f"{src}: {len(people)} identities with {noise.min_photos}+ photos; the benchmark needs 3 or more")
    people = [people[i] for i in rng.permutation(len(people))]
    n_open = min(len(people) - 2, round(noise.open_set * len(people))) if noise.distractor > 0 else 0
    n_open = max(n_open, 1 if noise.distractor > 0 else 0)
    open_set, in_set = people[:n_open], people[n_open:]
    photos = {d.name: [ _photos(d)[i] for i in rng.permutation(len(_photos(d)))][: noise.max_photos] for d in in_set}
    total = sum(len(v) for v in photos.values())
    rows: list[dict] = []

    def put(label: str, name: str, data: bytes, **truth) -> str:
        (out / label).mkdir(parents=True, exist_ok=True)
        source = f"{label}/{name}"
        (out / label / name).write_bytes(data)
        rows.append({"source": source, "label": label, **truth})
        return source

    def donors() -> list:  # people who keep 3 photos or more after giving one away
        return [p for p, v in photos.items() if len(v) > 3]

    # flips: photos taken from their owner and filed under another in-set person
    flips = []
    for _ in range(round(noise.flip * total)):
        donors_now = donors()
        if not donors_now or len(photos) < 2:
            break
        donor = donors_now[int(rng.integers(len(donors_now)))]
        target = [p for p in photos if p != donor][int(rng.integers(len(photos) - 1))]
        flips.append((donor, photos[donor].pop(), target))
    # group photos: a photo taken from its owner, among other people's photos (each gives one too)
    groups = []
    for _ in range(round(noise.group * total)):
        donors_now = donors()
        if not donors_now or len(photos) < 3:
            break
        who = donors_now[int(rng.integers(len(donors_now)))]
        others = [p for p in donors_now if p != who]
        picks = [others[i] for i in rng.permutation(len(others))[: int(rng.integers(1, 4))]]
        groups.append((who, photos[who].pop(), [photos[p].pop() for p in picks]))
    # split: half of a person's photos under a second label
    splittable = [p for p, v in photos.items() if len(v) >= 6]
    split = {p: f"{p}~2" for p in [splittable[i] for i in rng.permutation(len(splittable))][: noise.split]}
    clean_sources = []
    for person, files in photos.items():
        half = len(files) // 2 if person in split else len(files)
        for k, f in enumerate(files):
            label, kind = (person, "clean") if k < half else (split[person], "split")
            s = put(label, f.name, f.read_bytes(), person=person, kind=kind, original=None,
                    detail=split.get(person) if kind == "split" else None)
            clean_sources.append((s, f))
    labels = sorted({r["label"] for r in rows})
    for k, (who, f, others) in enumerate(groups):
        data, box = group_photo(f.read_bytes(), [o.read_bytes() for o in others], rng)
        put(who, f"zz_group{k}_{f.stem}.jpg", data, person=who, kind="group", original=None,
            detail=",".join(str(int(v)) for v in box))
    for k, (donor, f, target) in enumerate(flips):
        put(target, f"zz_flip{k}_{f.name}", f.read_bytes(), person=donor, kind="flip", original=None, detail=target)
    pool = [f for d in open_set for f in _photos(d)]
    for k in range(min(round(noise.distractor * total), len(pool))):
        f = pool[int(rng.integers(len(pool)))]
        pool.remove(f)
        label = labels[int(rng.integers(len(labels)))]
        put(label, f"zz_other{k}_{f.name}", f.read_bytes(), person=f.parent.name, kind="distractor", original=None,
            detail=label)
    picks = rng.permutation(len(clean_sources))
    n_dup, n_bad = round(noise.duplicate * total), round(noise.unidentifiable * total)
    for k, i in enumerate(picks[:n_dup]):
        s, f = clean_sources[i]
        label = s.split("/")[0]
        how = COPY_KINDS[k % len(COPY_KINDS)]
        put(label, f"zz_dup{k}_{how}_{Path(f.name).stem}.jpg", copy_photo(f.read_bytes(), how, rng),
            person=next(r["person"] for r in rows if r["source"] == s), kind="duplicate", original=s, detail=how)
    kinds = list(DEGRADATIONS)
    for k, i in enumerate(picks[n_dup : n_dup + n_bad]):
        s, f = clean_sources[i]
        pixels, _ = decode_one(f.read_bytes(), DecodeConfig())
        if pixels is None:
            continue
        box = None
        if detector is not None:
            faces = detector.detect(pixels)
            if len(faces):
                box = tuple(faces.boxes[int(np.argmax(faces.scores))])
        kind = kinds[k % len(kinds)]
        buf = io.BytesIO()
        Image.fromarray(DEGRADATIONS[kind](pixels, box, rng)).save(buf, "JPEG", quality=92)
        put(s.split("/")[0], f"zz_bad{k}_{kind}_{Path(f.name).stem}.jpg", buf.getvalue(),
            person=next(r["person"] for r in rows if r["source"] == s), kind="unidentifiable", original=s, detail=kind)
    for k, data in enumerate(_non_faces(max(round(noise.nonface * total), 1 if noise.nonface > 0 else 0), rng)):
        label = labels[int(rng.integers(len(labels)))]
        put(label, f"zz_nonface{k}.jpg", data, person=None, kind="nonface", original=None, detail=NON_FACES[k % len(NON_FACES)])
    return pa.Table.from_pylist(rows, schema=TRUTH)


def write_truth(truth: pa.Table, path: str, noise: Noise, seed: int, src: str) -> None:
    from curate.files import atomic_write

    meta = {b"noise": str(asdict(noise)).encode(), b"seed": str(seed).encode(), b"faces": os.path.abspath(src).encode()}
    atomic_write(path, lambda tmp: pq.write_table(truth.replace_schema_metadata(meta), tmp))


# -- scoring a run against the truth -------------------------------------------------------------


def _pr(flag: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((flag & truth).sum())
    return {"flagged": int(flag.sum()), "true": int(truth.sum()), "hits": tp,
            "precision": round(tp / flag.sum(), 4) if flag.sum() else None,
            "recall": round(tp / truth.sum(), 4) if truth.sum() else None}


def run_images(out: str) -> pa.Table:
    """The run's images rows that ``joined`` needs (read once, reused across a sweep)."""
    from curate.io.shards import ShardStore

    files = ShardStore.of(out).completed_files("images")
    return pq.ParquetDataset(files).read(columns=["image_id", "source", "sha1", "reason", "embedding"]) \
        .rename_columns(["image_id", "source", "sha1", "spine_reason", "embedding"])


def joined(out: str, truth: pa.Table, scores: pa.Table | None = None, images: pa.Table | None = None) -> pa.Table:
    """The run's final rows (reason, keep, scores) with the truth of each file, by source.
    ``images``: ``run_images(out)``, when the caller already has it."""
    from curate.io.shards import ShardStore

    store = ShardStore.of(out)
    images = run_images(out) if images is None else images
    if scores is None:
        digest = store.current_scoring()
        if not digest:
            raise InputError(f"{out}: not scored yet")
        scores = pq.read_table(store.scores_file(digest))
    scores = scores.drop_columns([c for c in ("spine_reason",) if c in scores.column_names])
    pos = {k: i for i, k in enumerate(scores["image_id"].to_pylist())}
    take = pa.array([pos[k] for k in images["image_id"].to_pylist()], pa.int64())
    t = images
    for c in scores.column_names:
        if c not in ("image_id",):
            t = t.append_column(c, scores[c].take(take))
    current = store.current_scoring()
    curated = store.view_files(current).get("curated") if current else None
    if curated and "bbox" not in t.column_names:
        # the face the scoring chose, its box and its embedding: a group photo's may not be the
        # spine's first face, and its quality is the chosen face's (the EDC pairs the two)
        chosen = pa.concat_tables([pq.read_table(f, columns=["image_id", "bbox", "embedding"]) for f in curated])
        at = pc.index_in(t["image_id"], value_set=chosen["image_id"])
        emb = chosen["embedding"].combine_chunks().cast(t.schema.field("embedding").type).take(at)
        t = t.set_column(t.schema.get_field_index("embedding"), "embedding",
                         pc.if_else(pc.is_valid(at), emb, t["embedding"].combine_chunks()))
        t = t.append_column("bbox", chosen["bbox"].take(at))
    tpos = {k: i for i, k in enumerate(truth["source"].to_pylist())}
    missing = [s for s in t["source"].to_pylist() if s not in tpos]
    if missing:
        raise InputError(f"{len(missing)} files of the run have no truth (e.g. {missing[0]}): not this benchmark's crawl")
    ttake = pa.array([tpos[s] for s in t["source"].to_pylist()], pa.int64())
    for c in ("label", "person", "kind", "original", "detail"):
        t = t.append_column(f"truth_{c}", truth[c].take(ttake))
    return t


def evaluate(t: pa.Table, identities: pa.Table | None = None) -> dict:
    """Metrics of a joined table (``joined``); see the module doc. ``identities``: the scoring's
    identities table (merge links)."""
    kind = np.array(t["truth_kind"].to_pylist(), object)
    reason = np.array(t["reason"].to_pylist(), object)
    spine = np.array(t["spine_reason"].to_pylist(), object)
    keep = np.asarray(t["keep"].to_numpy(zero_copy_only=False), bool)
    scored = spine == "ok"  # reached scoring: a face was found and embedded
    per_kind = {k: {"files": int((kind == k).sum()), **{r: int(((kind == k) & (reason == r)).sum())
                                                        for r in sorted(set(reason[kind == k]))}} for k in KINDS if (kind == k).any()}
    clean = np.isin(kind, ("clean", "split"))
    # a group photo whose face in the row is someone else's (the person's own went undetected) is
    # label noise as the scorer sees it: that face is not the labelled person
    noise = np.isin(kind, LABEL_NOISE) | (wrong_face(t) if "bbox" in t.column_names else np.zeros(len(t), bool))
    bad = noise | np.isin(kind, JUNK)
    out = {
        "files": len(t), "per_kind": per_kind,
        "purity": round(1 - (keep & bad).sum() / max(keep.sum(), 1), 4),
        "label_purity": round(1 - (keep & noise).sum() / max(keep.sum(), 1), 4),
        "clean_retention": round((keep & clean).sum() / max(clean.sum(), 1), 4),
        "clean_retention_detected": round((keep & clean & scored).sum() / max((clean & scored).sum(), 1), 4),
        "clean_rejected_by_scoring": {r: int((clean & scored & (reason == r)).sum()) for r in SCORING_REASONS
                                      if (clean & scored & (reason == r)).any()},
    }
    # label noise: the label flags, over faces that reached scoring; and every rejection
    out["label_noise"] = _pr(np.isin(reason, LABEL_FLAGS) & scored, noise & scored)
    out["label_noise_any_rejection"] = _pr(~keep & scored, noise & scored)
    out["label_noise_rejected_overall"] = round(float((~keep & noise).sum() / max(noise.sum(), 1)), 4)
    out["unidentifiable"] = _pr((reason == "unidentifiable") & scored, (kind == "unidentifiable") & scored)
    # of the degraded copies the recognizer does not match (far, or nearer another identity): how
    # many are called unidentifiable rather than mislabelled; the others it identified, and keeps
    missed = (kind == "unidentifiable") & scored & np.isin(reason, ("unidentifiable", *LABEL_FLAGS))
    out["unidentifiable_unmatched"] = _pr((reason == "unidentifiable") & scored, missed)
    out["unidentifiable_matched_share"] = round(float(((kind == "unidentifiable") & scored & keep).sum()
                                                      / max(((kind == "unidentifiable") & scored).sum(), 1)), 4)
    out["unidentifiable_rejected_overall"] = round(float((~keep & (kind == "unidentifiable")).sum()
                                                         / max((kind == "unidentifiable").sum(), 1)), 4)
    # the issue's definition applied to the truth: a clean photo the recognizer cannot verify
    # against half of its person's other photos is badly seen (a Yale B face lit from the side)
    hard = clean & scored & unverified(t)
    out["clean_unverified"] = int(hard.sum())
    out["clean_rejected_unidentifiable"] = round(float((clean & scored & (reason == "unidentifiable")).sum()
                                                       / max((clean & scored).sum(), 1)), 4)
    out["verified_clean_rejected_unidentifiable"] = round(
        float((clean & scored & ~hard & (reason == "unidentifiable")).sum()) / max((clean & scored & ~hard).sum(), 1), 4)
    out["unidentifiable_by_recognition"] = _pr((reason == "unidentifiable") & scored,
                                               ((kind == "unidentifiable") | hard) & scored)
    out["nonface_rejected"] = round(float((~keep & (kind == "nonface")).sum() / max((kind == "nonface").sum(), 1)), 4)
    out["duplicates"] = duplicate_pairs(t)
    out["distinct_pairs_called_duplicate"] = distinct_pairs_called_duplicate(t)
    if "bbox" in t.column_names and (kind == "group").any():
        out["groups"] = group_picks(t)
    if identities is not None:
        out["merges"] = merge_links(t, identities)
    return out


def duplicate_pairs(t: pa.Table) -> dict:
    """Pairs (original, re-saved copy) both embedded: caught when one of the two is rejected as
    duplicate of the other. Precision: duplicate rows whose kept twin is their true pair,
    or a byte-identical file (the source sets hold some)."""
    src = t["source"].to_pylist()
    ids = t["image_id"].to_pylist()
    row = {s: i for i, s in enumerate(src)}
    by_id = {k: i for i, k in enumerate(ids)}
    reason = t["reason"].to_pylist()
    dup_of = t["dup_of"].to_pylist()
    spine = t["spine_reason"].to_pylist()
    sha = t["sha1"].to_pylist()
    kind, orig = t["truth_kind"].to_pylist(), t["truth_original"].to_pylist()
    twin = {}
    for i, (k, o) in enumerate(zip(kind, orig)):
        if k == "duplicate" and o in row:
            twin[i], twin[row[o]] = row[o], i
    pairs = [(i, row[orig[i]]) for i in range(len(t)) if kind[i] == "duplicate" and orig[i] in row
             and spine[i] == "ok" and spine[row[orig[i]]] == "ok"]

    def rep(x):  # the face a duplicate points to, else the face itself
        return by_id.get(dup_of[x], x) if reason[x] == "duplicate" else x

    caught = [("duplicate" in (reason[a], reason[b]) and rep(a) == rep(b)) for a, b in pairs]
    hits = sum(caught)
    how = t["truth_detail"].to_pylist()
    per_kind = {}
    for (a, _), c in zip(pairs, caught):
        k = per_kind.setdefault(how[a] or "copy", {"pairs": 0, "caught": 0})
        k["pairs"] += 1
        k["caught"] += int(c)
    for k in per_kind.values():
        k["recall"] = round(k["caught"] / k["pairs"], 4)
    flagged = [i for i, r in enumerate(reason) if r == "duplicate"]
    right = sum(1 for i in flagged if dup_of[i] in by_id and (twin.get(i) == by_id[dup_of[i]]
                                                              or (sha[i] and sha[i] == sha[by_id[dup_of[i]]])))
    return {"pairs": len(pairs), "pairs_caught": hits, "recall": round(hits / len(pairs), 4) if pairs else None,
            "flagged": len(flagged), "precision": round(right / len(flagged), 4) if flagged else None,
            "per_kind": dict(sorted(per_kind.items()))}


def unverified(t: pa.Table, fmr: float = 1e-3) -> np.ndarray:
    """(N,) bool: an embedded face that the recognizer verifies against fewer than half of its
    person's other photos (copies of its own photo left out) at the cosine where ``fmr`` of the
    impostor pairs of the crawl's clean photos match: what the card's quality model is fitted to
    predict, measured on the crawl itself."""
    from curate.schema import decode_embeddings

    kind = np.array(t["truth_kind"].to_pylist(), object)
    person = np.array(t["truth_person"].to_pylist(), object)
    m = np.flatnonzero((np.array(t["spine_reason"].to_pylist(), object) == "ok") & (person != None))  # noqa: E711
    out = np.zeros(len(t), bool)
    if len(m) < 3:
        return out
    emb = decode_embeddings(t["embedding"].take(pa.array(m))).astype(np.float32)
    unit(emb, out=emb)
    sim = emb @ emb.T
    who = np.unique(person[m].astype(str), return_inverse=True)[1]
    src, orig = np.array(t["source"].to_pylist(), object), np.array(t["truth_original"].to_pylist(), object)
    photo = np.unique(np.where(orig != None, orig, src)[m].astype(str), return_inverse=True)[1]  # noqa: E711
    originals = np.isin(kind[m], ("clean", "split"))
    iu = np.triu_indices(len(m), 1)
    imp = (who[iu[0]] != who[iu[1]]) & originals[iu[0]] & originals[iu[1]]
    if not imp.any():
        return out
    thr = np.quantile(sim[iu][imp], 1.0 - fmr)
    mates = (who[:, None] == who[None, :]) & (photo[:, None] != photo[None, :])
    n = mates.sum(1)
    out[m] = (n > 0) & (((sim > thr) & mates).sum(1) < n / 2)
    return out


def distinct_pairs_called_duplicate(t: pa.Table) -> dict:
    """Pairs of distinct clean photos of one person (a split person's two labels included) that the scoring called a
    duplicate (one rejected as the other's copy, their bytes differing), as a share of all such
    pairs: web photos and lab sittings (ORL, Yale, Yale B) apart."""
    rows = t.select(["image_id", "truth_kind", "truth_person", "reason", "dup_of", "sha1"]).to_pylist()
    by_id = {r["image_id"]: r for r in rows}
    clean = [r for r in rows if r["truth_kind"] in ("clean", "split") and r["truth_person"]]
    count: dict[str, int] = {}
    for r in clean:
        count[r["truth_person"]] = count.get(r["truth_person"], 0) + 1
    out = {}
    for side in ("web", "lab"):
        people = [p for p in count if p.startswith(("orl", "yale")) == (side == "lab")]
        n = sum(count[p] * (count[p] - 1) // 2 for p in people)
        called = sum(1 for r in clean if r["reason"] == "duplicate" and r["truth_person"] in people
                     and (twin := by_id.get(r["dup_of"])) is not None and twin["truth_kind"] in ("clean", "split")
                     and twin["sha1"] != r["sha1"])
        out[side] = {"pairs": n, "called": called, "share": round(called / n, 5) if n else None}
    return out


def _inside(detail: str | None, box: list | None) -> bool:
    """Is the center of ``box`` inside the group photo's person box ``detail`` (x1,y1,x2,y2)?"""
    if not detail or not box:
        return False
    x1, y1, x2, y2 = (float(v) for v in detail.split(","))
    return x1 <= (box[0] + box[2]) / 2 <= x2 and y1 <= (box[1] + box[3]) / 2 <= y2


def wrong_face(t: pa.Table) -> np.ndarray:
    """(N,) bool: a group photo whose row carries a face, and not the labelled person's."""
    return np.array([k == "group" and b is not None and not _inside(d, b) for k, b, d in
                     zip(t["truth_kind"].to_pylist(), t["bbox"].to_pylist(), t["truth_detail"].to_pylist())], bool)


def group_picks(t: pa.Table) -> dict:
    """Group photos with a face found: the share where a face was chosen (not left
    multi_face_ambiguous), and, of those kept, the share that keep the labelled person's face (its
    box's center inside the person's pasted photo). A chosen face that is someone else's (the
    person's own face went undetected) should be rejected as label noise, not kept."""
    rows = [r for r in t.select(["truth_kind", "spine_reason", "reason", "keep", "bbox", "truth_detail"]).to_pylist()
            if r["truth_kind"] == "group" and r["spine_reason"] in ("ok", "multi_face_ambiguous")]
    chosen = [r for r in rows if r["reason"] != "multi_face_ambiguous" and r["bbox"]]
    kept = [r for r in chosen if r["keep"]]

    def inside(r):
        return _inside(r["truth_detail"], r["bbox"])

    right = sum(1 for r in kept if inside(r))
    return {"photos": len(rows), "chosen": len(chosen), "chosen_share": round(len(chosen) / len(rows), 4) if rows else None,
            "kept": len(kept), "kept_right": right, "right_share": round(right / len(kept), 4) if kept else None,
            "chosen_right": sum(1 for r in chosen if inside(r))}


def merge_links(t: pa.Table, identities: pa.Table) -> dict:
    """Split people (a person under two labels): found when the identities table links the two
    labels; precision over every link the scoring made."""
    splits = {}
    for label, detail, k in zip(t["truth_label"].to_pylist(), t["truth_detail"].to_pylist(), t["truth_kind"].to_pylist()):
        if k == "split":
            splits[frozenset((label, detail.replace("~2", "") if detail else label))] = True
    links = {frozenset((r["identity"], r["merge_into"])) for r in identities.to_pylist() if r.get("merge_into")}
    hits = sum(1 for s in splits if s in links)
    right = sum(1 for link in links if link in splits)
    return {"split_people": len(splits), "found": hits, "recall": round(hits / len(splits), 4) if splits else None,
            "links": len(links), "precision": round(right / len(links), 4) if links else None}


# -- quality: error versus discard ---------------------------------------------------------------

EDC_SIGNALS = ("quality", "norm_pct", "det_score_pct", "sharpness_pct")
DISCARD = tuple(round(x, 2) for x in np.arange(0.0, 0.51, 0.02))


def edc(t: pa.Table, fmr: float = 1e-3, signals=EDC_SIGNALS, discard=DISCARD) -> pa.Table:
    """Error versus discard: for each quality signal and discarded share r of the faces (lowest
    quality first), FNMR of the remaining genuine pairs at the cosine threshold where FMR of the
    remaining impostor pairs is ``fmr``. Pairs are by the truth's person, over every face that was
    embedded (clean, copies, degraded, mislabelled alike). Lower and steeper is better."""
    from curate.schema import decode_embeddings

    m = np.asarray(pc.and_(pc.equal(t["spine_reason"], "ok"), pc.is_valid(t["truth_person"])).to_numpy(zero_copy_only=False), bool)
    s = t.filter(pa.array(m))
    if len(s) < 3:
        return pa.table({"signal": pa.array([], pa.string()), "discard": pa.array([], pa.float64()),
                         "fnmr": pa.array([], pa.float64()), "faces": pa.array([], pa.int64())})
    emb = decode_embeddings(s["embedding"]).astype(np.float32)
    unit(emb, out=emb)
    person = np.unique(np.array(s["truth_person"].to_pylist(), object).astype(str), return_inverse=True)[1]
    sim = emb @ emb.T
    iu = np.triu_indices(len(s), 1)
    same = person[iu[0]] == person[iu[1]]
    rows = {"signal": [], "discard": [], "fnmr": [], "faces": []}
    for sig in signals:
        q = np.nan_to_num(np.asarray(s[sig].to_numpy(zero_copy_only=False), np.float64), nan=-1.0)
        order = np.argsort(q, kind="stable")
        for r in discard:
            keep = np.ones(len(s), bool)
            keep[order[: int(round(r * len(s)))]] = False
            pk = keep[iu[0]] & keep[iu[1]]
            gen, imp = sim[iu][pk & same], sim[iu][pk & ~same]
            if not len(gen) or not len(imp):
                continue
            thr = np.quantile(imp, 1.0 - fmr)
            rows["signal"].append(sig)
            rows["discard"].append(float(r))
            rows["fnmr"].append(float(np.mean(gen <= thr)))
            rows["faces"].append(int(keep.sum()))
    return pa.table(rows)


def edc_summary(curve: pa.Table, upto: float = 0.3) -> dict:
    """Mean FNMR over discard shares up to ``upto`` per signal (the area under its EDC)."""
    out = {}
    for sig in sorted(set(curve["signal"].to_pylist())):
        c = curve.filter(pc.and_(pc.equal(curve["signal"], sig), pc.less_equal(curve["discard"], upto + 1e-9)))
        out[sig] = round(float(np.mean(c["fnmr"].to_numpy())), 4)
    return out


# -- sweeps --------------------------------------------------------------------------------------

SWEEPS = {
    "far_angle": tuple(range(50, 96, 5)),
    "merge_threshold": (0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9),
    "unidentifiable_below": (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0),
}


def sweep(out: str, truth: pa.Table, cal: dict | None, base=None, grid: dict | None = None) -> pa.Table:
    """The precision/recall trade-off of each threshold, every other setting at its default:
    scoring re-run from the stored embeddings (no model) at each value of ``grid``."""
    from dataclasses import replace

    from curate.config import ScoreConfig
    from curate.curation import READ
    from curate.io.shards import ShardStore
    from curate.scoring import score_table

    store = ShardStore.of(out)
    ds = pq.ParquetDataset(store.completed_files("images"))
    t = ds.read(columns=[c for c in READ if c in ds.schema.names])  # score_table fills what an older run lacks
    detections = pq.ParquetDataset(store.completed_files("detections")).read()  # group photos' faces
    base = base or ScoreConfig()
    images = run_images(out)
    rows = []
    for name, values in (grid or SWEEPS).items():
        for v in values:
            scores, identities, _ = score_table(t, replace(base, **{name: v}), cal, detections=detections)
            m = evaluate(joined(out, truth, scores, images), identities)
            metric = {"far_angle": "label_noise", "merge_threshold": "merges",
                      "unidentifiable_below": "unidentifiable"}[name]
            rows.append({"threshold": name, "value": float(v), "precision": m[metric].get("precision"),
                         "recall": m[metric].get("recall"), "purity": m["purity"], "clean_retention": m["clean_retention"]})
    return pa.Table.from_pylist(rows)


# -- the peer baseline ---------------------------------------------------------------------------


def cleanlab_baseline(t: pa.Table, min_faces: int = 3, seed: int = 0) -> dict:
    """cleanlab's find_label_issues (confident learning) on out-of-sample probabilities of a
    5-fold logistic regression over the same embeddings, for faces in identities with at least
    ``min_faces`` scored faces. Precision and recall against the truth's label noise. Needs the
    ``bench`` extra (cleanlab is AGPL: a benchmark-only dependency)."""
    from curate.errors import require_module

    cleanlab = require_module("cleanlab.filter", "bench")
    lm = require_module("sklearn.linear_model", "bench")
    ms = require_module("sklearn.model_selection", "bench")
    from curate.schema import decode_embeddings

    s = t.filter(pc.equal(t["spine_reason"], "ok"))
    labels = np.array(s["truth_label"].to_pylist(), object)
    names, counts = np.unique(labels, return_counts=True)
    ok = np.isin(labels, names[counts >= min_faces])
    s, labels = s.filter(pa.array(ok)), labels[ok]
    y = np.unique(labels, return_inverse=True)[1]
    x = decode_embeddings(s["embedding"]).astype(np.float32)
    folds = min(5, int(np.bincount(y).min()))
    probs = ms.cross_val_predict(lm.LogisticRegression(max_iter=2000, C=10.0), x, y, cv=ms.StratifiedKFold(
        folds, shuffle=True, random_state=seed), method="predict_proba")
    # n_jobs=1: its default forks a pool, which deadlocks in a process that runs Prefect's threads
    issues = cleanlab.find_label_issues(labels=y, pred_probs=probs, n_jobs=1)
    truth = np.isin(np.array(s["truth_kind"].to_pylist(), object), LABEL_NOISE)
    if "bbox" in s.column_names:  # as evaluate: a group photo carrying someone else's face is label noise
        truth |= wrong_face(s)
    ours = np.isin(np.array(s["reason"].to_pylist(), object), LABEL_FLAGS)
    return {"faces": len(s), "cleanlab": _pr(np.asarray(issues, bool), truth), "ours_same_faces": _pr(ours, truth)}



def phash_baseline(crawl: str, t: pa.Table, max_distance: int = 10) -> dict:
    """The whole-photo perceptual hash alone, as imagededup's ``PHash().find_duplicates`` uses it
    (64-bit pHash, Hamming distance <= 10, its default), on the same crawl: recall of each copy
    kind, and the share of pairs of distinct clean photos of one person it calls duplicates, web
    photos and lab sittings apart. (imagededup itself cannot be imported here: it imports
    torchvision, whose registry wheel is built against CUDA torch, not the pinned CPU build.)"""
    import imagehash
    from PIL import Image, ImageOps

    src = t["source"].to_pylist()
    kind, orig, detail = (t[c].to_pylist() for c in ("truth_kind", "truth_original", "truth_detail"))
    person = t["truth_person"].to_pylist()
    bits = {}
    for s in src:
        try:
            with Image.open(os.path.join(crawl, s)) as im:
                bits[s] = imagehash.phash(ImageOps.exif_transpose(im).convert("L")).hash.ravel()
        except Exception:  # noqa: BLE001 - undecodable files are no one's duplicate
            pass

    def close(a, b):
        return a in bits and b in bits and int((bits[a] != bits[b]).sum()) <= max_distance

    per_kind: dict[str, dict] = {}
    for s, k, o, d in zip(src, kind, orig, detail):
        if k == "duplicate" and o in bits and s in bits:
            e = per_kind.setdefault(d or "copy", {"pairs": 0, "caught": 0})
            e["pairs"] += 1
            e["caught"] += int(close(s, o))
    for e in per_kind.values():
        e["recall"] = round(e["caught"] / e["pairs"], 4)
    clean: dict[str, list] = {}
    for s, k, p in zip(src, kind, person):
        if k in ("clean", "split") and s in bits:
            clean.setdefault(p, []).append(s)
    pairs = {"web": [0, 0], "lab": [0, 0]}
    for p, files in clean.items():
        side = pairs["lab" if p.startswith(("orl", "yale")) else "web"]
        for i in range(len(files)):
            for j in range(i + 1, len(files)):
                side[0] += 1
                side[1] += int(close(files[i], files[j]))
    return {"method": f"whole-photo pHash, Hamming <= {max_distance} (imagededup's PHash default)",
            "per_kind": dict(sorted(per_kind.items())),
            "distinct_pairs_called_duplicate": {k: {"pairs": n, "called": c, "share": round(c / n, 4) if n else None}
                                                for k, (n, c) in pairs.items()}}
