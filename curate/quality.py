"""Quality as recognition: the chance that the recognizer verifies a face against another photo of
its person, given what the face looks like (../shared/spec: MagFace and AdaFace use the feature norm
as that proxy; here the norm is one signal among several, weighed by what they do for matching).

On a model card's reference set (clean labelled faces and degraded copies of some of them, through
the spine: curate.calibration), each face's *match rate* is the share of its person's other photos
(for a copy, all but its original) that it is verified against at the reference's cosine for a
false-match rate of 1e-3: the operating point of the error-versus-discard curve (EDC: mean FNMR at
FMR 1e-3 of the same-person pairs left after discarding the lowest 0-30%), so quality ranks faces
by what discarding them does for verification. ``fit`` models the rate as a logistic regression on
transformed quality signals (``FEATURES``); a fitted coefficient of the wrong sign drops its signal,
so the chance is monotone in every signal it uses: a sharper, larger, better-detected face never
scores lower. Signals are chosen by forward selection on the EDC of the chance predicted for people
held out of the fit (folds by identity), over sets of the reference's faces that look like a crawl
(``crawl_like``: its photos, with 1 degraded copy in ``ANY_PRIOR``): the copies the fit needs at
the low end would otherwise choose signals that only find copies.

The fitted model lives in the card as ``quality.match`` (plain numbers) and scoring applies it with
``probability``. ``quality`` = 100 x that chance. ``thresholds`` chooses, on the reference, the
quality under which any face is ``unidentifiable`` and a higher one for a face that does not match
its identity (a poor face far from its label is not evidence against the label). Pure NumPy.
"""

from __future__ import annotations

import numpy as np

# signal -> (transform, the sign its coefficient must have: quality rises with +1 signals)
FEATURES = {
    "norm": (lambda v: np.log(np.maximum(v, 1e-3)), 1),
    "det_score": (lambda v: np.log(np.clip(v, 1e-4, 1 - 1e-4) / (1 - np.clip(v, 1e-4, 1 - 1e-4))), 1),
    "sharpness": (np.log1p, 1),
    "brightness": (np.log1p, 1),
    "contrast": (np.log1p, 1),
    "detail": (lambda v: np.log(np.maximum(v, 1e-6)), 1),
    "face_size": (lambda v: np.log(np.maximum(v, 4.0)), 1),
    "yaw": (lambda v: np.abs(v) / 45.0, -1),
    "pitch": (lambda v: np.abs(v) / 45.0, -1),
    "embedding": (lambda v: v, 1),  # the probe's logit: what the face's own embedding says of its chance (``probe``)
}
FMR = 1e-3  # the EDC's operating point, as the benchmark's
DISCARD = np.arange(0.0, 0.3001, 0.02)
MIN_GAIN = 0.002  # a signal joins when it lowers the held-out EDC by at least this (absolute FNMR)
PRIOR = 10.0  # among faces that do not match, mislabelled ones are taken to be this many times as common as badly seen ones
PROBE_L2 = 1e-2  # the embedding probe's ridge, per face
ANY_PRIOR = 30.0  # among all of a crawl's faces, one in this many is taken to be badly seen


def design(values: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """(N, F) transformed signals (NaN where a value is missing)."""
    return np.stack([FEATURES[k][0](np.asarray(values[k], np.float64)) for k in names], 1) if names else \
        np.zeros((len(next(iter(values.values()))), 0))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression of y (N,) in [0, 1] (a share is fitted as its expected value) on
    standardised x (N, F), ridge ``l2`` per face, by Newton's method. -> (mean (F,), scale (F,),
    weights (F + 1,), the intercept first)."""
    mean, scale = np.nanmean(x, 0), np.nanstd(x, 0) + 1e-9
    z = np.c_[np.ones(len(x)), np.nan_to_num((x - mean) / scale)]
    w = np.zeros(z.shape[1])
    ridge = l2 * len(y) * np.diag(np.r_[0.0, np.ones(z.shape[1] - 1)])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -30, 30)))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + ridge + 1e-9 * np.eye(len(w)), z.T @ (p - y) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return mean, scale, w


def _predict(mean, scale, w, x: np.ndarray) -> np.ndarray:
    z = np.nan_to_num((x - mean) / scale)  # a missing signal counts as the reference's average
    return 1 / (1 + np.exp(-np.clip(w[0] + z @ w[1:], -30, 30)))


def probe(emb: np.ndarray, rate: np.ndarray, l2: float = PROBE_L2) -> dict:
    """A linear probe of the chance on the unit embeddings ``emb`` (N, D): where in the recognizer's
    space faces it cannot verify fall (thumbnails, blur and dark shots land together, away from any
    person). The standardisation is folded into the weights: logit = emb @ weights + bias."""
    mean, scale, w = fit_logistic(emb, rate, l2)
    weights = w[1:] / scale
    return {"weights": weights.round(6).tolist(), "bias": round(float(w[0] - weights @ np.nan_to_num(mean)), 6), "l2": l2}


def probe_logits(emb: np.ndarray, rate: np.ndarray, person: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) each face's probe logit from a probe fitted without its person (folds by identity): the
    ``embedding`` signal as it is for a person the card has never seen."""
    ids = np.unique(person)
    fold = np.random.default_rng(seed + 1).permutation(len(ids))[np.searchsorted(ids, person)] % folds
    out = np.zeros(len(emb))
    for f in range(folds):
        tr = fold != f
        if tr.any() and (~tr).any():
            out[~tr] = probe_logit(probe(emb[tr], rate[tr]), emb[~tr])
    return out


def probe_logit(p: dict, emb: np.ndarray) -> np.ndarray:
    """(N,) float64: a ``probe``'s logit of the unit embeddings ``emb`` (N, D), in their own
    precision (no float64 copy of a float32 partition)."""
    return (emb @ np.asarray(p["weights"], emb.dtype)).astype(np.float64) + p["bias"]


def probability(model: dict, values: dict[str, np.ndarray], emb: np.ndarray | None = None) -> np.ndarray:
    """(N,) the card's match probability of faces with these signal values; ``emb`` (N, D) their
    unit embeddings, for a model that uses its probe (``embedding``) unless ``values`` has it."""
    names = model["signals"]
    n = len(next(iter(values.values())))
    if "embedding" in names and "embedding" not in values and emb is not None and model.get("probe"):
        values = {**values, "embedding": probe_logit(model["probe"], emb)}
    x = design({k: values.get(k, np.full(n, np.nan)) for k in names}, names)
    return _predict(np.array(model["mean"]), np.array(model["scale"]), np.array([model["intercept"], *model["coef"]]), x)


def edc(emb: np.ndarray, person: np.ndarray, q: np.ndarray) -> float:
    """The area under the error-versus-discard curve: its mean FNMR."""
    c = edc_curve(emb, person, q)
    return float(np.mean(c)) if c else float("nan")


def edc_curve(emb: np.ndarray, person: np.ndarray, q: np.ndarray) -> list[float]:
    """FNMR of the same-person pairs left after discarding each DISCARD share of the faces, lowest
    ``q`` first, at the threshold where FMR of the different-person pairs left is FMR."""
    iu = np.triu_indices(len(emb), 1)
    sims = (emb @ emb.T)[iu]
    same = person[iu[0]] == person[iu[1]]
    order = np.argsort(q, kind="stable")
    out = []
    for r in DISCARD:
        keep = np.ones(len(q), bool)
        keep[order[: int(round(r * len(q)))]] = False
        k = keep[iu[0]] & keep[iu[1]]
        gen, imp = sims[k & same], sims[k & ~same]
        if len(gen) and len(imp):
            out.append(round(float(np.mean(gen <= np.quantile(imp, 1 - FMR))), 5))
    return out


def _monotone(w: np.ndarray, names: list[str]) -> bool:
    return all(np.sign(c) in (0, FEATURES[k][1]) for c, k in zip(w[1:], names))


def crawl_like(clean: np.ndarray, rng: np.random.Generator, max_faces: int = 2000, draws: int = 3) -> list[np.ndarray]:
    """Sets of reference faces that look like a crawl, for the EDC that chooses signals: its own
    photos (``clean`` (N,) bool; up to ``max_faces`` in all, pairs grow as N^2) with copies made
    to be 1 in ``ANY_PRIOR`` of the set, ``draws`` draws of them. A reference holds a degraded copy
    for every few photos, to fit the chance of matching at its low end; an EDC over that mix
    rewards a signal for finding copies, where a crawl's EDC is mostly its own photos' natural
    spread (pose, size, light)."""
    c, b = np.flatnonzero(clean), np.flatnonzero(~clean)
    n_b = min(len(b), int(round(min(len(c), max_faces) / (ANY_PRIOR - 1))))
    n_c = min(len(c), max_faces - n_b)
    return [np.sort(np.r_[rng.choice(c, n_c, replace=False), rng.choice(b, n_b, replace=False)])
            for _ in range(draws if n_b else 1)]


def fit(values: dict[str, np.ndarray], matched: np.ndarray, emb: np.ndarray, person: np.ndarray, folds: int = 5,
        seed: int = 0, max_faces: int = 2000, clean: np.ndarray | None = None) -> dict:
    """The match model of a reference: ``values`` signal -> (N,) (``FEATURES``' names; a signal
    missing for any face is not a candidate), ``matched`` (N,) each face's match rate in [0, 1]
    (or bool), ``emb`` (N, D) unit embeddings and ``person`` (N,) int identity codes for the
    held-out EDC, ``clean`` (N,) bool the reference's own photos (the rest: degraded copies), for
    an EDC over crawl-like sets of them (``crawl_like``; None: every face a photo, so one random
    ``max_faces`` of them). -> the
    card's ``quality.match`` (module doc), with the held-out EDC of each step and of each signal
    alone."""
    rng = np.random.default_rng(seed)
    y = np.asarray(matched, np.float64)
    cands = [k for k in FEATURES if k in values and np.isfinite(np.asarray(values[k], np.float64)).all()]
    ids = np.unique(person)
    fold = dict(zip(ids.tolist(), (rng.permutation(len(ids)) % folds).tolist()))
    f_of = np.array([fold[p] for p in person.tolist()])
    subs = crawl_like(np.ones(len(y), bool) if clean is None else np.asarray(clean, bool), rng, max_faces)

    def predicted(names: list[str]) -> np.ndarray | None:
        """Each face's probability from a model fitted without its person; None if not monotone."""
        x, p = design(values, names), np.zeros(len(y))
        for f in range(folds):
            tr = f_of != f
            if not tr.any() or tr.all() or not 0 < y[tr].mean() < 1:
                return None
            m = fit_logistic(x[tr], y[tr])
            if not _monotone(m[2], names):
                return None
            p[~tr] = _predict(*m, x[~tr])
        return p

    def held_out(names: list[str]) -> float:
        p = predicted(names)
        return float(np.mean([edc(emb[s], person[s], p[s]) for s in subs])) if p is not None else float("nan")

    alone = {k: held_out([k]) for k in cands}
    chosen, best, steps = [], float("inf"), []
    while True:
        trial = {k: held_out(chosen + [k]) for k in cands if k not in chosen}
        trial = {k: v for k, v in trial.items() if np.isfinite(v)}
        if not trial:
            break
        k = min(trial, key=trial.get)
        if trial[k] > best - MIN_GAIN:
            break
        chosen.append(k)
        best = trial[k]
        steps.append({"signals": list(chosen), "edc": round(best, 4)})
    if not chosen:  # nothing helps (or one class): the best single signal, for a ranking at least
        chosen = [min(alone, key=lambda k: alone[k] if np.isfinite(alone[k]) else np.inf)] if alone else []
    mean, scale, w = fit_logistic(design(values, chosen), y) if chosen and 0 < y.mean() < 1 else \
        (np.zeros(len(chosen)), np.ones(len(chosen)), np.r_[0.0, np.zeros(len(chosen))])
    curves = {"discard": DISCARD.round(2).tolist()}
    for name, names in (("quality", chosen), *((k, [k]) for k in ("det_score", "norm") if k in cands)):
        p = predicted(names) if names else None
        if p is not None:  # the draws' curves, averaged (a tiny reference may lose a step's pairs in one)
            cs = [edc_curve(emb[s], person[s], p[s]) for s in subs]
            curves[name] = np.mean([c[: min(map(len, cs))] for c in cs], 0).round(5).tolist()
    return {"signals": chosen, "mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "intercept": round(float(w[0]), 6), "coef": w[1:].round(6).tolist(), "steps": steps,
            "edc_alone": {k: round(v, 4) if np.isfinite(v) else None for k, v in alone.items()},  # None: wrong sign alone
            "edc": round(best, 4) if steps else round(alone[chosen[0]], 4) if chosen and np.isfinite(alone[chosen[0]]) else None,
            "faces": int(len(y)), "matched": round(float(y.mean()), 4) if len(y) else None, "edc_curves": curves}


def threshold(p_pass: np.ndarray, p_fail: np.ndarray, odds: float) -> float:
    """The highest quality (0-100, steps of 0.5) at which a reference face below it is ``odds``
    times likelier to be one that fails to match (``p_fail``: the chances predicted for them) than
    one that passes (``p_pass``); 0 (never) when none reaches the odds."""
    a, b = np.sort(100 * np.asarray(p_pass)), np.sort(100 * np.asarray(p_fail))
    if not len(a) or not len(b):
        return 0.0
    best = 0.0
    for t in np.arange(0.5, 100.0, 0.5):
        fa = np.searchsorted(a, t) / len(a)
        fb = np.searchsorted(b, t) / len(b)
        if fb > 0 and fb >= odds * max(fa, 1.0 / len(a)):
            best = float(t)
    return best


def thresholds(p: np.ndarray, rate: np.ndarray, clean: np.ndarray) -> dict:
    """The card's two thresholds of ``unidentifiable`` from its reference: ``p`` (N,) the predicted
    chance, ``rate`` (N,) the share of the person's other photos each face was verified against,
    ``clean`` (N,) the reference's own photos (the rest: degraded copies). A face *fails* when it is
    verified against fewer than half of them.

    - ``unidentifiable_below``: any face under it, matched or not. Among a crawl's faces, badly seen
      ones are taken to be 1 in ``ANY_PRIOR``, and a face is called unidentifiable at 3 to 1.
    - ``unmatched_below``: a face that does not match its identity (far from it, or nearer another)
      under it. Among those, mislabelled faces (well seen: they look like faces that pass) are taken
      to be ``PRIOR`` times as common as badly seen ones, at the same 3 to 1."""
    fail = rate < 0.5
    out = {"unidentifiable_below": threshold(p[~fail], p[fail], 3.0 * ANY_PRIOR),
           "unmatched_below": threshold(p[~fail], p[fail], 3.0 * PRIOR)}
    out["unmatched_below"] = max(out["unmatched_below"], out["unidentifiable_below"])
    below = 100 * p < out["unidentifiable_below"]
    out["reference_below"] = {"clean": round(float(below[clean].mean()), 4) if clean.any() else None,
                              "copies": round(float(below[~clean].mean()), 4) if (~clean).any() else None}
    out["why"] = (f"a face fails when verified against fewer than half its person's other photos. Any face is "
                  f"unidentifiable under quality {out['unidentifiable_below']:g}: there reference faces that fail are "
                  f"{3 * ANY_PRIOR:g} times as common as faces that pass, odds of 3 to 1 when 1 crawl face in "
                  f"{ANY_PRIOR:g} is badly seen. A face that does not match its identity is unidentifiable under "
                  f"{out['unmatched_below']:g}: {3 * PRIOR:g} times, odds of 3 to 1 when mislabelled faces are "
                  f"{PRIOR:g} times as common as badly seen ones among those")
    return out
