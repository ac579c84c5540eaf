"""The static review page: the faces curation flagged, with buttons. Each flagged identity shows a
strip of its best kept faces to compare with; each flagged face its image_id, file, angle to the
identity, quality, nearest other identity and, for a copy, the twin it copies. A reviewer decides
per face (keep / reject / relabel: "this face is X") or per identity (keep all / reject /
relabel), then downloads ``reviews.json`` (the format: curate.reviews), which ``curate review
import`` adds to the run. The page runs one inline script and fetches
nothing (its Content-Security-Policy forbids it); the decisions never leave the browser except
through that download."""

from __future__ import annotations

import base64
import html
import os

from curate import audit
from curate.files import atomic_write
from curate.io.shards import ShardStore

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

SCRIPT = """
const decisions = new Map();
function decide(btn) {
  const d = btn.dataset, id = d.scope + '|' + d.key;
  const value = d.action === 'relabel' ? document.getElementById('relabel-' + d.idx).value.trim() : null;
  if (d.action === 'relabel' && !value) { return; }
  document.querySelectorAll('[data-group="' + CSS.escape(id) + '"]').forEach(b => b.classList.remove('chosen'));
  if (decisions.has(id) && decisions.get(id).action === d.action && d.action !== 'relabel') {
    decisions.delete(id);
  } else {
    decisions.set(id, {scope: d.scope, key: d.key, action: d.action, value: value,
                       reviewer: document.getElementById('reviewer').value.trim() || null,
                       at: new Date().toISOString()});
    btn.classList.add('chosen');
  }
  document.getElementById('count').textContent = decisions.size;
}
window.facecurateReviews = () => JSON.stringify([...decisions.values()].map(
  r => Object.assign({}, r, {reviewer: r.reviewer || document.getElementById('reviewer').value.trim() || null})));
document.querySelectorAll('button[data-action]').forEach(b => b.addEventListener('click', () => decide(b)));
document.getElementById('download').addEventListener('click', () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([window.facecurateReviews()], {type: 'application/json'}));
  a.download = 'reviews.json';
  a.click();
});
"""

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 12px}
.identity{border:1px solid #e3e3e3;border-radius:6px;padding:6px 12px;margin:12px 0}
.tiles{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:112px;font-size:11px}
.face{width:112px;height:112px;display:block;border-radius:3px;outline:3px solid #d8643b}
button{font-size:11px;margin:2px 2px 0 0}button.chosen{background:#3b7dd8;color:#fff}
.bar{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd}
.kept .face{outline-color:#3b9d5d;width:64px;height:64px}.kept figure{width:64px}
.twin{width:56px;height:56px;outline:2px solid #888;border-radius:3px;vertical-align:middle}
figcaption input{width:104px;font-size:11px}.id{font-family:monospace;font-size:10px;color:#555;word-break:break-all}
"""


def _e(s) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def _img(crop: bytes, cls: str, alt: str) -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:image/jpeg;base64,{base64.b64encode(crop).decode()}">'


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def build(out: str, digest: str, dest: str | None = None, identities: int = 200, per_identity: int = 24,
          kept_strip: int = 6) -> str:
    store = ShardStore.of(out)
    con = audit.connect(out, score_digest=digest)
    rows = con.sql("""SELECT identity, image_id, source, crop, reason, review, angle_to_dominant, quality,
                             nearest_other_identity, dup_of FROM curated
                      WHERE NOT keep AND spine_reason = 'ok' AND crop IS NOT NULL
                      QUALIFY dense_rank() OVER (ORDER BY identity) <= $n
                          AND row_number() OVER (PARTITION BY identity ORDER BY image_id) <= $m
                      ORDER BY identity, image_id""", params={"n": identities, "m": per_identity}).to_arrow_table()
    names = sorted(set(rows["identity"].to_pylist()))
    kept = con.sql("""SELECT identity, image_id, crop FROM curated WHERE keep AND crop IS NOT NULL
                      AND list_contains($names, identity)
                      QUALIFY row_number() OVER (PARTITION BY identity ORDER BY quality DESC NULLS LAST, image_id) <= $k""",
                   params={"names": names, "k": kept_strip}).to_arrow_table()
    twins = con.sql("SELECT image_id, crop FROM curated WHERE crop IS NOT NULL AND list_contains($ids, image_id)",
                    params={"ids": [d for d in rows["dup_of"].to_pylist() if d]}).to_arrow_table()
    con.close()
    strip: dict[str, list] = {}
    for r in kept.to_pylist():
        strip.setdefault(r["identity"], []).append(r)
    twin = {r["image_id"]: r["crop"] for r in twins.to_pylist()}
    groups: dict[str, list] = {}
    for r in rows.to_pylist():
        groups.setdefault(r["identity"], []).append(r)
    sections = []
    for k, (ident, faces) in enumerate(groups.items()):
        gid = f"identity|{ident}"
        tiles = []
        for j, r in enumerate(faces):
            iid, idx = f"image|{r['image_id']}", f"{k}-{j}"
            buttons = "".join(f'<button data-scope="image" data-key="{_e(r["image_id"])}" data-action="{a}" '
                              f'data-group="{_e(iid)}">{a}</button>' for a in ("keep", "reject"))
            relabel = (f'<br><input id="relabel-{idx}" placeholder="this face is..."><button data-scope="image" '
                       f'data-key="{_e(r["image_id"])}" data-action="relabel" data-group="{_e(iid)}" data-idx="{idx}">'
                       "relabel</button>")
            facts = (f"{_num(r['angle_to_dominant'], '{:.0f}°')} · q {_num(r['quality'], '{:.0f}')}"
                     + (f"<br>nearest: {_e(r['nearest_other_identity'])}" if r["nearest_other_identity"] else ""))
            copy = (f"<br>copy of {_img(twin[r['dup_of']], 'twin', r['dup_of'])}" if r["dup_of"] in twin else "")
            tiles.append(f'<figure>{_img(r["crop"], "face", r["image_id"])}<figcaption>{_e(r["reason"])}'
                         f'{"<br>" + _e(r["review"]) if r["review"] else ""}<br>{facts}{copy}'
                         f'<br><span class="id">{_e(r["image_id"])}<br>{_e(r["source"])}</span><br>{buttons}{relabel}'
                         "</figcaption></figure>")
        ident_buttons = "".join(f'<button data-scope="identity" data-key="{_e(ident)}" data-action="{a}" '
                                f'data-group="{_e(gid)}" data-idx="{k}">{label}</button>'
                                for a, label in (("keep", "keep all"), ("reject", "reject identity")))
        relabel = (f'<input id="relabel-{k}" placeholder="new label"><button data-scope="identity" data-key="{_e(ident)}" '
                   f'data-action="relabel" data-group="{_e(gid)}" data-idx="{k}">relabel</button>')
        good = "".join(f"<figure>{_img(r['crop'], 'face', r['image_id'])}</figure>" for r in strip.get(ident, []))
        sections.append(f'<section class="identity"><h3>{_e(ident)}</h3>{ident_buttons} {relabel}'
                        + (f'<p>kept, best first:</p><div class="tiles kept">{good}</div>' if good else "<p>no face kept</p>")
                        + f'<p>flagged:</p><div class="tiles">{"".join(tiles)}</div></section>')
    body = (f'<div class="bar">reviewer <input id="reviewer" placeholder="your name"> · <span id="count">0</span> '
            f'decisions · <button id="download">download reviews.json</button> · then '
            f"<code>curate review import {_e(store.out)} reviews.json</code> and <code>curate score {_e(store.out)}</code></div>"
            f"<h1>Review: flagged faces</h1><p>{sum(len(v) for v in groups.values())} faces of {len(groups)} identities "
            f"(scores {_e(digest)}).</p>" + ("".join(sections) or "<p>nothing flagged</p>"))
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>facecurate review</title>'
            f"<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>")
    dest = os.path.abspath(dest or store.review_page(digest))

    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(dest, w)
    return dest

