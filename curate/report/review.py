"""The static review page: the faces curation flagged, with buttons. A reviewer decides per face
(keep / reject) or per identity (keep all / reject / relabel), then downloads ``reviews.json``,
which ``curate review import`` adds to the run. The page runs one inline script and fetches
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
"""


def _e(s) -> str:
    return html.escape("" if s is None else str(s), quote=True)


def build(out: str, digest: str, dest: str | None = None, identities: int = 200, per_identity: int = 24) -> str:
    store = ShardStore.of(out)
    con = audit.connect(out, score_digest=digest)
    rows = con.sql("""SELECT identity, image_id, crop, reason, review FROM curated
                      WHERE NOT keep AND spine_reason = 'ok' AND crop IS NOT NULL
                      QUALIFY dense_rank() OVER (ORDER BY identity) <= $n
                          AND row_number() OVER (PARTITION BY identity ORDER BY image_id) <= $m
                      ORDER BY identity, image_id""", params={"n": identities, "m": per_identity}).to_arrow_table()
    con.close()
    groups: dict[str, list] = {}
    for r in rows.to_pylist():
        groups.setdefault(r["identity"], []).append(r)
    sections = []
    for k, (ident, faces) in enumerate(groups.items()):
        gid = f"identity|{ident}"
        tiles = []
        for r in faces:
            iid = f"image|{r['image_id']}"
            buttons = "".join(f'<button data-scope="image" data-key="{_e(r["image_id"])}" data-action="{a}" '
                              f'data-group="{_e(iid)}">{a}</button>' for a in ("keep", "reject"))
            img = base64.b64encode(r["crop"]).decode()
            tiles.append(f'<figure><img class="face" alt="{_e(r["image_id"])}" src="data:image/jpeg;base64,{img}">'
                         f'<figcaption>{_e(r["reason"])}{"<br>" + _e(r["review"]) if r["review"] else ""}'
                         f"<br>{buttons}</figcaption></figure>")
        ident_buttons = "".join(f'<button data-scope="identity" data-key="{_e(ident)}" data-action="{a}" '
                                f'data-group="{_e(gid)}" data-idx="{k}">{label}</button>'
                                for a, label in (("keep", "keep all"), ("reject", "reject identity")))
        relabel = (f'<input id="relabel-{k}" placeholder="new label"><button data-scope="identity" data-key="{_e(ident)}" '
                   f'data-action="relabel" data-group="{_e(gid)}" data-idx="{k}">relabel</button>')
        sections.append(f'<section class="identity"><h3>{_e(ident)}</h3>{ident_buttons} {relabel}'
                        f'<div class="tiles">{"".join(tiles)}</div></section>')
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

