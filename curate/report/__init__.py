"""``curate report``: one static, self-contained HTML file (no server, no script, no network):
summary numbers, charts (matplotlib, inline SVG), audit tables, and galleries of kept vs flagged
faces per identity with the reason, angle and quality behind each decision.

Everything shown comes from the ``sql/`` audits and the run's views. Crawl labels are untrusted
text: every value is HTML-escaped, and a Content-Security-Policy forbids scripts and any fetch.

Longer than 400 lines because it is one page: each section is a short function, in page order.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os

import pyarrow as pa
import pyarrow.compute as pc

from curate import audit
from curate.errors import ConfigError, InputError, OutputError, require_module
from curate.files import atomic_write
from curate.io.shards import ShardStore

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
KEEP_COLOR, FLAG_COLOR = "#3b7dd8", "#d8643b"


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue().encode()).decode()
    return f'<img class="chart" alt="chart" src="data:image/svg+xml;base64,{data}">'


def _esc(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return html.escape(f"{v:.4g}")
    return html.escape(str(v))


def _table(t: pa.Table, max_rows: int = 30, flag: str | None = None) -> str:
    if len(t) == 0:
        return '<p class="none">none</p>'
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.column_names)
    rows = []
    for r in t.slice(0, max_rows).to_pylist():
        cls = ' class="flag"' if flag and r.get(flag) else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_esc(v)}</td>" for v in r.values()) + "</tr>")
    more = f'<p class="none">{len(t) - max_rows} more rows (curate audit)</p>' if len(t) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


class _Charts:
    def __init__(self):
        mpl = require_module("matplotlib", "report")
        mpl.use("Agg")
        mpl.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "facecurate", "font.size": 9,
                             "axes.spines.top": False, "axes.spines.right": False})
        import matplotlib.pyplot as plt

        self.plt = plt

    def fig(self, w=5.2, h=2.8):
        return self.plt.subplots(figsize=(w, h))

    def reasons(self, t):
        rows = [r for r in t.to_pylist() if r["reason"] != "ok"]
        fig, ax = self.fig(5.2, 0.35 * max(len(rows), 2) + 0.8)
        names = [f"{r['reason']} ({r['stage']})" for r in rows][::-1]
        ax.barh(names, [r["images"] for r in rows][::-1], color=FLAG_COLOR)
        ax.set_xlabel("images rejected")
        ax.set_title("Rejection reasons")
        return _svg(fig)

    def quality(self, t):
        fig, ax = self.fig()
        x = [(a + b) / 2 for a, b in zip(t["quality_from"].to_pylist(), t["quality_to"].to_pylist())]
        w = (t["quality_to"][0].as_py() - t["quality_from"][0].as_py()) if len(t) else 5
        kept, rej = t["kept"].to_pylist(), t["rejected"].to_pylist()
        ax.bar(x, kept, width=w * 0.9, color=KEEP_COLOR, label="kept")
        ax.bar(x, rej, width=w * 0.9, bottom=kept, color=FLAG_COLOR, label="rejected")
        ax.set_xlabel("quality (chance of matching, %)")
        ax.set_ylabel("faces")
        ax.set_title("Quality, kept vs rejected")
        ax.legend(frameon=False)
        return _svg(fig)

    def sizes(self, t):
        fig, ax = self.fig()
        lab = t["images"].to_pylist()
        xs = range(len(lab))
        ax.bar([x - 0.2 for x in xs], t["identities_before"].to_pylist(), 0.4, color="#999999", label="before")
        ax.bar([x + 0.2 for x in xs], t["identities_after"].to_pylist(), 0.4, color=KEEP_COLOR, label="after")
        ax.set_xticks(list(xs), lab, rotation=30)
        ax.set_xlabel("images per identity")
        ax.set_ylabel("identities")
        ax.set_title("Identity sizes, before vs after")
        ax.set_ylim(0, max([*t["identities_before"].to_pylist(), *t["identities_after"].to_pylist(), 1]) * 1.25)
        ax.legend(frameon=False, loc="upper right", ncols=2)  # headroom above the bars: one bucket fills the width
        return _svg(fig)

    def hist(self, values, title, xlabel, line=None, line_label=None, bins=30):
        fig, ax = self.fig()
        vals = [v for v in values if v is not None]
        ax.hist(vals, bins=bins, color=KEEP_COLOR)
        if line is not None:
            ax.axvline(line, color=FLAG_COLOR, ls="--", label=line_label)
            ax.legend(frameon=False)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        return _svg(fig)

    def edc(self, curve):
        fig, ax = self.fig()
        for sig in sorted(set(curve["signal"].to_pylist())):
            c = curve.filter(pc.equal(curve["signal"], sig))
            ax.plot(c["discard"].to_pylist(), c["fnmr"].to_pylist(), marker=".", label=sig)
        ax.set_xlabel("share of faces discarded, lowest quality first")
        ax.set_ylabel("FNMR at FMR 1e-3")
        ax.set_title("Error versus discard, per quality signal")
        ax.legend(frameon=False)
        return _svg(fig)

    def balance(self, t, attribute):
        rows = [r for r in t.to_pylist() if r["attribute"] == attribute]
        fig, ax = self.fig(5.2, 0.3 * len(rows) + 1.0)
        ys = range(len(rows))
        for off, key, color, label in ((-0.2, "before", "#999999", "before"), (0.2, "after", KEEP_COLOR, "after")):
            p = [r[f"pct_{key}"] for r in rows]
            err = [[r[f"pct_{key}"] - r[f"pct_{key}_lo"] for r in rows], [r[f"pct_{key}_hi"] - r[f"pct_{key}"] for r in rows]]
            ax.barh([y + off for y in ys], p, 0.4, xerr=err, color=color, label=label, capsize=2)
        ax.set_yticks(list(ys), [r["value"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("% of images (95% Wilson CI)")
        ax.set_title(f"{attribute}: balance before vs after")
        ax.legend(frameon=False)
        return _svg(fig)


def _gallery(con, identities: int, per_identity: int) -> str:
    """Identities with scoring-stage flags first (the interesting ones), then a fixed-seed sample."""
    pick = con.execute(
        """SELECT identity FROM scores WHERE identity IS NOT NULL GROUP BY identity
           ORDER BY count(*) FILTER (WHERE spine_reason = 'ok' AND NOT keep) > 0 DESC, md5(identity)
           LIMIT $n""", {"n": identities}).fetchall()
    ids = [r[0] for r in pick]
    if not ids:
        return '<p class="none">no identities</p>'
    total = con.sql("SELECT count(DISTINCT identity) FROM scores WHERE identity IS NOT NULL").fetchall()[0][0]
    note = (f'<p class=note>{len(ids)} of {total} identities (those with flagged faces first), up to {per_identity} kept '
            f"(best quality first) and {per_identity} flagged faces each.</p>")
    rows = con.sql(
        """SELECT identity, image_id, source, crop, keep, reason, angle_to_dominant, quality, dup_sim,
                  nearest_other_identity,
                  row_number() OVER (PARTITION BY identity, keep ORDER BY quality_rank, image_id) AS k
           FROM curated WHERE list_contains($ids, identity)
           QUALIFY k <= $m ORDER BY identity, keep DESC, k""", params={"ids": ids, "m": per_identity}).to_arrow_table()
    by_id: dict[str, dict[bool, list]] = {i: {True: [], False: []} for i in ids}
    for r in rows.to_pylist():
        by_id[r["identity"]][r["keep"]].append(r)
    out = []
    for ident in ids:
        sections = []
        for keep, label in ((True, "kept"), (False, "flagged")):
            tiles = "".join(_tile(r) for r in by_id[ident][keep]) or '<p class="none">none</p>'
            sections.append(f'<div class="{label}"><h4>{label}</h4><div class="tiles">{tiles}</div></div>')
        out.append(f'<section class="identity"><h3>{_esc(ident)}</h3>{"".join(sections)}</section>')
    return note + "".join(out)


def _overrides(con, digest: str) -> str:
    """Review decisions applied on top of the automatic ones (curate review import), and the page
    to make more."""
    link = (f'<p class=note>Review the flagged faces in <code>review-{_esc(digest)}.html</code> beside this report, '
            "then <code>curate review import</code> and <code>curate score</code>.</p>")
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    if "review" not in cols:
        return "<h2>Review overrides</h2>" + link
    t = con.sql("""SELECT image_id, identity, label, auto_reason, reason, review FROM scores
                   WHERE review IS NOT NULL ORDER BY identity, image_id LIMIT 200""").to_arrow_table()
    return ("<h2>Review overrides</h2>" + link
            + (_table(t, 80) if len(t) else '<p class="none">no review decision applied</p>'))


def _leakage(store) -> str:
    """Crawl identities found in evaluation sets (curate leakage), when checked."""
    import pyarrow.parquet as pq

    path = os.path.join(store.leakage_dir(), "identities.parquet")
    if not os.path.exists(path):
        return ""
    import json

    t = pq.read_table(path)
    meta = {}
    for k, v in (t.schema.metadata or {}).items():
        try:
            meta[k.decode()] = json.loads(v)
        except ValueError:  # written by an earlier release: shown as it is
            meta[k.decode()] = v.decode()
    against = meta.get("against", "?")
    against = ", ".join(os.path.basename(str(a).rstrip("/")) for a in against) if isinstance(against, list) else against
    th = meta.get("thresholds")
    th = (f"same image cos &ge; {th['same_image']:.3f}, same person &gt; {th['same_person']:.3f}, templates &ge; "
          f"{th['template']:.3f}" if isinstance(th, dict) else _esc(th or "?"))
    return ("<h2>Benchmark leakage</h2>"
            f"<p class=note>against {_esc(against)}; {th}. "
            "<code>curate export --exclude-leaked</code> leaves these identities out.</p>"
            + (_table(t.drop_columns(["against"]) if "against" in t.column_names else t, 100) if len(t)
               else '<p class="none">no crawl identity matches the evaluation sets</p>'))


def _loop(store) -> str:
    """The loop's rounds side by side and its before/after verification (curate loop), when present."""
    path = store.loop_file()
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        s = json.load(f)
    cols = ("images", "kept", "purity", "clean_retention", "label_noise_precision", "label_noise_recall", "model")
    rounds = pa.Table.from_pylist([{"round": k, **{c: r.get(c) for c in cols},
                                    "reasons": ", ".join(f"{a} {b}" for a, b in sorted(r["reasons"].items(), key=lambda x: -x[1]))}
                                   for k, r in enumerate(s["rounds"])])
    v = s["verification"]
    ver = pa.Table.from_pylist([{"model": {"base": "frozen base", "noisy": "trained on the raw crawl",
                                           "curated": f"trained: {v['recipe']}"}[k],
                                 "training faces": v["train_faces"].get(k), "accuracy": round(v[k]["accuracy"], 4),
                                 "TAR@FAR 1e-3": v[k]["tar_at_far"].get("0.001"), "TAR@FAR 1e-2": v[k]["tar_at_far"].get("0.01")}
                                for k in ("base", "noisy", "curated")])
    return ("<h2>The loop: rounds side by side</h2>" + _table(rounds)
            + f"<h3>Before/after: verified on {v['held_out_people']} held-out people ({v['held_out_faces']} faces)</h3>"
            + _table(ver))


def _calibration(store, digest: str) -> dict:
    path = store.calibration_file(digest)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _scoring_config(store, digest: str) -> dict:
    return _calibration(store, digest).get("config") or {}


def _quality(store, digest: str, charts) -> str:
    """What quality is and what it does for recognition: the card's error-versus-discard curves on
    people held out of its fit (curate.quality)."""
    q = _calibration(store, digest).get("quality")
    if not q:
        return ('<p class="none">quality here is a percentile of reference norms: the recognizer has no match model '
                '(run <code>curate calibrate</code>)</p>')
    curves = q.get("edc_curves") or {}
    rows = [{"signal": k, "discard": d, "fnmr": f} for k, v in curves.items() if k != "discard"
            for d, f in zip(curves.get("discard", []), v)]
    chart = charts.edc(pa.Table.from_pylist(rows)) if rows else ""
    below = (f"A face with quality below {_esc(_fmt(q.get('unidentifiable_below'), '{:.1f}'))}, or one that does not match "
             f"its identity below {_esc(_fmt(q.get('unmatched_below'), '{:.1f}'))}, is" if q.get("unmatched_below") is not None
             else f"A face that does not match, with quality below {_esc(_fmt(q.get('unidentifiable_below'), '{:.1f}'))}, is")
    return (f"<p>quality is the recognizer's chance (percent) of matching the face "
            f"({_esc(q.get('operating_point') or '')}), from {_esc(' + '.join(q.get('signals') or []))}. {below} "
            f"<code>unidentifiable</code>: {_esc(q.get('why') or '')}. So is the worse of two copies of one photo in "
            f"which the recognizer does not see the same face (<code>unmatched_copy_of</code>). On the card's "
            f"reference, people held out: "
            f"error-versus-discard {_esc(_fmt(q.get('edc'), '{:.4f}'))} (lower is better; detector score alone "
            f"{_esc(_fmt((q.get('edc_alone') or {}).get('det_score'), '{:.4f}'))}).</p>"
            + (f'<div class="charts">{chart}</div>' if chart else ""))


def _crops(con, ids: list[str]) -> dict[str, dict]:
    if not ids:
        return {}
    t = con.sql("""SELECT identity, image_id, source, crop, keep, reason, angle_to_dominant, quality, dup_sim,
                          nearest_other_identity FROM curated WHERE list_contains($ids, image_id)""",
                params={"ids": ids}).to_arrow_table()
    return {r["image_id"]: r for r in t.to_pylist()}


def _clusters(con, t, per_cluster: int = 7) -> str:
    """Each duplicate cluster (copies, rejected) or group of near-identical shots (kept unless asked)
    as faces: the representative, then the others."""
    rows = t.to_pylist()
    if not rows:
        return '<p class="none">none</p>'
    ids = [i for r in rows for i in [r["representative"], *r["duplicates"][: per_cluster - 1]]]
    faces = _crops(con, ids)
    out = []
    for r in rows:
        tiles = "".join(_tile(faces[i]) for i in [r["representative"], *r["duplicates"][: per_cluster - 1]] if i in faces)
        more = f'<p class="note">+{r["size"] - per_cluster} more</p>' if r["size"] > per_cluster else ""
        out.append(f'<section class="identity"><h4>{_esc(r["identity"])}: {r["size"]} images, {_esc(r["kind"])}, '
                   f'min cosine {_esc(r["min_sim"])}</h4><div class="tiles">{tiles}</div>{more}</section>')
    return "".join(out)


def _unusable(con, store, limit: int = 24) -> str:
    """Images the spine could not use (no face, undecodable, too small, ...): thumbnails of the
    original where it decodes, else the error, so that a reviewer sees what was lost."""
    t = con.sql("""SELECT item, source, identity, reason, reason_detail FROM images
                   WHERE reason NOT IN ('ok', 'multi_face_ambiguous', 'too_small') ORDER BY reason, item LIMIT $n""",
                params={"n": limit}).to_arrow_table()
    total = con.execute("SELECT count(*) FROM images WHERE reason NOT IN ('ok', 'multi_face_ambiguous', 'too_small')").fetchone()[0]
    if not len(t):
        return '<p class="none">none</p>'
    show = t.filter(pc.is_in(t["reason"], pa.array(["no_face", "no_identity", "too_small_image", "embed_error"])))
    thumbs = {k: _thumbnail(v) for k, v in _originals(store, show).items()}
    tiles = []
    for r in t.to_pylist():
        img = thumbs.get(r["item"])
        pic = (f'<img class="face" alt="{_esc(r["source"])}" src="data:image/jpeg;base64,{img}">' if img
               else '<div class="noface">cannot show</div>')
        cap = (_esc(r["reason"]) + f"<br><small>{_esc(_tail(r['source']))}</small>"
               + (f"<br>{_esc((r['reason_detail'] or '')[:60])}" if r["reason_detail"] else ""))
        tiles.append(f'<figure title="{_esc(r["source"])}">{pic}<figcaption>{cap}</figcaption></figure>')
    note = f'<p class="note">{len(t)} of {total} shown</p>' if total > len(t) else ""
    return f'<div class="tiles">{"".join(tiles)}</div>{note}'


def _tail(source: str, n: int = 40) -> str:
    """The end of a source path (the file name and its folder), to fit under a tile."""
    return source if len(source) <= n else "…" + source[-(n - 1):]


def _originals(store, t: pa.Table) -> dict[int, bytes]:
    """item -> the original bytes of ``t``'s rows (item, source, identity), read again through the
    run's own source reader (never a too_large one); what cannot be read is left out."""
    try:
        index = pa.table({"item": t["item"], "source": t["source"], "identity": t["identity"],
                          "offset": _offsets(store, t["item"].to_pylist())})
        fetched = store.source().fetch(index, 32 << 20)
        return {k: v for k, v in zip(fetched["item"].to_pylist(), fetched["data"].to_pylist()) if v}
    except Exception:  # noqa: BLE001 - a report never fails on an input that moved or broke
        return {}


def _group_photos(con, store, limit: int = 120) -> str:
    """Photos with several faces where scoring picked the labelled person's (another face than the
    most prominent one first), and those it left ambiguous: the photo with the picked box drawn."""
    cols = {r[0] for r in con.execute("DESCRIBE curated").fetchall()}
    if "group_pick" not in cols:
        return '<p class="none">this scoring predates group-photo picks</p>'
    where = "group_pick IS NOT NULL AND (face_idx > 0 OR reason = 'multi_face_ambiguous')"
    t = con.sql(f"""SELECT item, source, identity, reason, face_idx, n_faces, bbox, group_pick FROM curated
                    WHERE {where} ORDER BY reason = 'multi_face_ambiguous', identity, item LIMIT $n""",
                params={"n": limit}).to_arrow_table()
    picked, total = con.execute(f"SELECT count(*) FILTER (WHERE reason <> 'multi_face_ambiguous'), count(*) "
                                f"FROM curated WHERE {where}").fetchone()
    if not len(t):
        return '<p class="none">none</p>'
    originals = _originals(store, t)
    tiles = []
    for r in t.to_pylist():
        img = _thumbnail(originals.get(r["item"]), r["bbox"] if r["reason"] != "multi_face_ambiguous" else None, 224)
        pic = (f'<img style="width:224px" alt="{_esc(r["source"])}" src="data:image/jpeg;base64,{img}">' if img
               else '<div class="noface">cannot show</div>')
        cap = f"{_esc(r['identity'])}<br>{_esc(r['reason'])}: {_esc(r['group_pick'])}"
        tiles.append(f'<figure style="width:224px" title="{_esc(r["source"])}">{pic}<figcaption>{cap}</figcaption></figure>')
    return (f'<p class="note">{picked} photos got a face other than the most prominent one, '
            f'{total - picked} stayed ambiguous; {len(t)} shown, the picked face boxed in red</p>'
            f'<div class="tiles">{"".join(tiles)}</div>')


def _offsets(store, items: list[int]) -> pa.Array:
    import pyarrow.parquet as pq

    plan = pq.read_table(store.index_file(), columns=["item", "offset"])
    pos = {k: i for i, k in enumerate(plan["item"].to_pylist())}
    return plan["offset"].take(pa.array([pos[i] for i in items], pa.int64()))


def _thumbnail(data: bytes | None, box: list | None = None, size: int = 112) -> str | None:
    """A base64 JPEG thumbnail of an original photo, with ``box`` (x1, y1, x2, y2 in its pixels)
    drawn when given."""
    if not data:
        return None
    try:
        from PIL import Image, ImageDraw, ImageOps

        with Image.open(io.BytesIO(data)) as im:
            if box is None:
                im.draft("RGB", (2 * size, 2 * size))  # JPEG: decode at a fraction of the size
            im = ImageOps.exif_transpose(im).convert("RGB") if box is not None else im.convert("RGB")
            if box is not None:  # boxes are in the EXIF-oriented full-size image
                ImageDraw.Draw(im).rectangle(box, outline=(220, 30, 30), width=max(2, im.width // 120))
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
        return base64.b64encode(buf.getvalue()).decode()
    except Exception:  # noqa: BLE001 - undecodable: shown as such
        return None


def _tile(r: dict) -> str:
    cap = [_esc(r["reason"])]
    if r["angle_to_dominant"] is not None:
        cap.append(f"angle {r['angle_to_dominant']:.1f}&deg;")
    if r["quality"] is not None:
        cap.append(f"q {r['quality']:.0f}")
    if r["reason"] in ("far_from_dominant", "cross_id_conflict") and r["nearest_other_identity"]:
        cap.append(f"near {_esc(r['nearest_other_identity'])}")
    if r["reason"] == "duplicate" and r["dup_sim"] is not None:
        cap.append(f"dup {r['dup_sim']:.3f}")
    title = _esc(f"{r['source']} ({r['image_id']})")
    if r["crop"]:
        img = f'<img class="face" alt="{_esc(r["image_id"])}" src="data:image/jpeg;base64,{base64.b64encode(r["crop"]).decode()}">'
    else:
        img = '<div class="noface">no crop</div>'
    return f'<figure title="{title}">{img}<figcaption>{"<br>".join(cap)}</figcaption></figure>'


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 12px}
h1{font-size:22px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.numbers{display:flex;flex-wrap:wrap;gap:12px}.numbers div{background:#f4f6f8;padding:8px 14px;border-radius:6px}
.numbers b{display:block;font-size:20px}.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{max-width:560px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
tr.flag td{background:#fde8e1}.none{color:#888}.note{color:#555}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px}
.identity{border:1px solid #e3e3e3;border-radius:6px;padding:6px 12px;margin:12px 0}.identity h3{margin:4px 0}
.tiles{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:112px;font-size:11px}
.face{width:112px;height:112px;display:block;border-radius:3px}.flagged .face{outline:3px solid #d8643b}
.kept .face{outline:3px solid #3b7dd8}.noface{width:112px;height:112px;background:#eee;display:flex;
align-items:center;justify-content:center;color:#999}h4{margin:6px 0 2px}
"""


def build_report(out: str, dest: str | None = None, identities: int = 12, per_identity: int = 8,
                 scores: str | None = None) -> str:
    """Write the HTML report of scoring ``scores`` (a digest or prefix; default: the current one)."""
    store = ShardStore.of(out)
    if identities < 0 or per_identity < 0:
        raise ConfigError("--identities and --per-identity must be >= 0")
    digest = store.resolve_scoring(scores)
    if not digest:
        raise InputError(f"{out}: not scored yet (run `curate score {out}`)")
    if dest and not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise OutputError(f"{dest}: its directory {os.path.dirname(os.path.abspath(dest))} does not exist")
    charts = _Charts()
    con = audit.connect(out, score_digest=digest)
    qs = audit.queries()
    have = audit.views(con)

    def q(name, **params):
        return audit.run_query(con, qs[name], {k: str(v) for k, v in params.items()})

    with open(store.summary_file(digest)) as f:
        summary = json.load(f)
    spine = store.summary()
    reasons, quality, sizes = q("reasons"), q("quality_histogram"), q("identity_sizes")
    before_after = q("before_after")
    angles = con.execute("SELECT list(angle_to_dominant) FROM scores WHERE angle_to_dominant IS NOT NULL").fetchone()[0] or []
    shares = con.execute("SELECT list(dominant_share) FROM identities").fetchone()[0] or []
    numbers = [
        ("images", summary["images"]), ("kept", summary["kept"]), ("rejected", summary["images"] - summary["kept"]),
        ("identities", spine.get("identities", summary["identities"])),
        ("identities kept", summary["identities_kept"]), ("for review", summary["identities_review"]),
        ("merge candidates", summary["identities_merged"]),
        ("far angle", f"{summary['far_angle']:.1f}°" if summary.get("far_angle") else "n/a"),
    ]
    src = summary.get("threshold_source") or {}
    thresholds = (f"<p class=note>thresholds: far angle {_esc(_fmt(summary.get('far_angle'), '{:.1f}°'))} "
                  f"({_esc(src.get('far_angle', '?'))}), duplicate cosine {_esc(_fmt(summary.get('dup_cos'), '{:.3f}'))} "
                  f"({_esc(src.get('dup_cos', '?'))}), merge cosine {_esc(_fmt(summary.get('merge_cos'), '{:.3f}'))} "
                  f"({_esc(src.get('merge_cos', '?'))}); card: the recognizer's calibrated model card, run: estimated "
                  "from this crawl, config: set by the user</p>")
    warnings = "".join(f'<p class="warn">&#9888; {_esc(w)}</p>' for w in summary.get("warnings", []))
    body = [
        f"<h1>facecurate report</h1><p class=note>run <code>{_esc(store.out)}</code> &middot; input "
        f"<code>{_esc(spine['input'])}</code> &middot; config {_esc(spine['digest'])} &middot; scores {_esc(digest)}"
        f" &middot; {_esc(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>",
        '<div class="numbers">' + "".join(f"<div><b>{_esc(v)}</b>{_esc(k)}</div>" for k, v in numbers) + "</div>",
        warnings + thresholds,
        "<h2>Before vs after</h2>" + _table(before_after),
        '<h2>Charts</h2><div class="charts">' + charts.reasons(reasons) + charts.quality(quality) + charts.sizes(sizes)
        + charts.hist(angles, "Angle to the dominant sub-center", "degrees", summary.get("far_angle"), "far threshold")
        + charts.hist(shares, "Dominant sub-center share per identity", "share of the identity's faces",
                      _scoring_config(store, digest).get("min_dominant_share", 0.5), "review below")
        + "</div>",
        "<h2>Rejection reasons</h2>" + _table(reasons),
        "<h2>Quality</h2>" + _quality(store, digest, charts),
        "<h2>Noisiest identities</h2>" + _table(q("noise_per_identity", limit=20)),
        "<h2>Merge candidates</h2>" + _table(q("merge_candidates", limit=20)),
        "<h2>Duplicates and near-identical shots</h2>" + _clusters(con, q("duplicate_clusters", limit=20)),
        "<h2>Images with no usable face</h2>" + _unusable(con, store),
        "<h2>Group photos</h2>" + _group_photos(con, store),
        "<h2>Faces in group photos that match another identity</h2>" + (
            _table(q("group_candidates", limit=20)) if "group_faces" in have
            else '<p class="none">this scoring predates group photos: run <code>curate score OUT</code></p>'),
        "<h2>Demographics</h2>" + _demographics(q, have, charts, qs),
        _benchmark(store, charts),
        _loop(store),
        _leakage(store),
        _overrides(con, digest),
        "<h2>Galleries</h2>" + _gallery(con, identities, per_identity),
    ]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>facecurate report: {_esc(os.path.basename(store.out))}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    dest = dest or store.report_file(digest)

    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(os.path.abspath(dest), w)
    con.close()
    from curate.report import review

    review.build(out, digest, os.path.join(os.path.dirname(os.path.abspath(dest)), os.path.basename(store.review_page(digest))))
    return os.path.abspath(dest)


def _benchmark(store, charts) -> str:
    """The benchmark's measurements of this run against its truth (curate bench), when present."""
    d = store.bench_dir()
    if not os.path.exists(os.path.join(d, "metrics.json")):
        return ""
    import pyarrow.parquet as pq

    with open(os.path.join(d, "metrics.json")) as f:
        m = json.load(f)
    head = pa.Table.from_pylist([{"metric": k, "value": m[k]} for k in (
        "purity", "label_purity", "clean_retention", "clean_retention_detected", "label_noise_rejected_overall",
        "unidentifiable_rejected_overall", "nonface_rejected") if k in m])
    flags = pa.Table.from_pylist([{"flag": k, **{c: m[k].get(c) for c in ("flagged", "true", "hits", "precision", "recall")}}
                                  for k in ("label_noise", "label_noise_any_rejection", "unidentifiable") if k in m]
                                 + [{"flag": "duplicate (pairs)", "flagged": m["duplicates"]["flagged"],
                                     "true": m["duplicates"]["pairs"], "hits": m["duplicates"]["pairs_caught"],
                                     "precision": m["duplicates"]["precision"], "recall": m["duplicates"]["recall"]}]
                                 + ([{"flag": "identity_merge_candidate (split people)", "flagged": m["merges"]["links"],
                                      "true": m["merges"]["split_people"], "hits": m["merges"]["found"],
                                      "precision": m["merges"]["precision"], "recall": m["merges"]["recall"]}]
                                    if "merges" in m else [])
                                 + [{"flag": f"label noise, {who} (faces in identities of 3+)",
                                     **{c: m["baseline"][key].get(c) for c in ("flagged", "true", "hits", "precision", "recall")}}
                                    for who, key in (("cleanlab find_label_issues", "cleanlab"), ("ours", "ours_same_faces"))
                                    if key in m.get("baseline", {})])
    kinds = pa.Table.from_pylist([{"kind": k, **v} for k, v in m["per_kind"].items()]) if m.get("per_kind") else pa.table({})
    parts = ["<h2>Benchmark: this run against its truth</h2>",
             f'<p class=note>seed {_esc(m.get("seed"))}; built by curate bench from {_esc(m.get("faces"))}</p>',
             _table(head), "<h3>Flags</h3>" + _table(flags), "<h3>What happened to each injected kind</h3>" + _table(kinds)]
    if os.path.exists(os.path.join(d, "edc.parquet")):
        parts.append('<div class="charts">' + charts.edc(pq.read_table(os.path.join(d, "edc.parquet"))) + "</div>")
    if os.path.exists(os.path.join(d, "sweep.parquet")):
        parts.append("<h3>Threshold sweeps</h3>" + _table(pq.read_table(os.path.join(d, "sweep.parquet")), 80))
    return "".join(parts)


def _fmt(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def _demographics(q, have, charts, qs) -> str:
    msg = audit.missing_message(qs["demographic_balance"], have)
    if msg:
        return f'<p class="note">{_esc(msg)}</p>'
    bal = q("demographic_balance")
    groups = q("quality_by_demographic")
    attrs = sorted(set(bal["attribute"].to_pylist()))
    return ('<div class="charts">' + "".join(charts.balance(bal, a) for a in attrs) + "</div>"
            + "<h3>Balance (share of images, 95% Wilson CI)</h3>" + _table(bal, 60)
            + "<h3>Quality and rejection by group (flagged rows differ significantly from the rest)</h3>"
            + _table(groups, 60, flag="flagged")
            + "<h3>Drop rates by group and reason, Wilson 95% interval (flagged: dropped significantly more "
              "than the rest)</h3>" + _table(q("demographic_drop_rates"), 80, flag="flagged"))
