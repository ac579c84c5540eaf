"""Every reason a row can have, as data: name, the stage that sets it, whether it says the label is
wrong (label noise), what it means and the rule that sets it. Selection applies the scoring
reasons in this order; the benchmark, the report, the SQL library (the ``reasons`` table every
connection has) and the table in docs/scoring.md (``python -m curate.reasons`` prints it; a test keeps it
equal) all read this list. Each scores row carries ``is_<reason>`` booleans beside ``reason``.

A new reason is one entry here, its rule (in its stage; scoring rules in stages/select.py) and
its test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Reason:
    name: str
    stage: str  # read | decode | detect | embed | score | review (any: ok)
    label_noise: bool  # the face is not the labelled person
    description: str
    rule: str


REASONS = (
    Reason("ok", "any", False, "kept", "no other reason applies"),
    Reason("no_identity", "read", False, "the crawl gives no (or an empty) identity label",
           "a file directly in a folder crawl's root, an empty label column"),
    Reason("read_error", "read", False, "the bytes could not be read", "missing, unreadable, a bad offset, a link "
           "that loops (or leaves the root with --no-follow-links), an unsafe archive member"),
    Reason("decode_error", "decode", False, "not an image, truncated or corrupt", "the decoder refuses the bytes"),
    Reason("too_large", "decode", False, "over the byte or pixel limit", "max_bytes, or max_pixels from the header "
           "(a decompression bomb)"),
    Reason("too_small_image", "decode", False, "a side below the minimum image size", "min_side"),
    Reason("no_face", "detect", False, "no face found", "the detector finds none above its score"),
    Reason("multi_face_ambiguous", "detect", False, "several faces, none clearly the labelled one",
           "the second face's prominence is at least ambiguity_ratio of the first's, and scoring finds no face "
           "within the far angle of the label's template that is the person at 100:1 odds against the runner-up"),
    Reason("low_det_score", "detect", False, "the chosen face's detector score is low", "below min_score"),
    Reason("too_small", "detect", False, "the chosen face is small", "below --min-face-size px"),
    Reason("embed_error", "embed", False, "the recognizer returned a NaN, Inf or zero feature", "a non-finite embedding"),
    Reason("duplicate", "score", False, "the same photo again (re-encoded, resized, mirrored); "
           "the best-quality copy stays", "identical bytes, or the photo's perceptual hashes (64 and 256 bits) that say "
           "copy (curate.stages.dedup.copy_pairs) with an embedding cosine of at least 0.7 (except a copy of a face "
           "filed under another identity and far from its own: then the label flag)"),
    Reason("near_identical", "score", False, "a distinct shot nearly the same as a better one (burst, video frame, "
           "lab sitting); kept unless asked", "only with --drop-near-identical: an embedding cosine at or above the "
           "duplicate threshold without the hashes of a copy; the best-quality shot stays"),
    Reason("identity_merge_candidate", "score", False, "this identity looks like another label of one person",
           "only with --merge reject: dominant centers at or above the merge cosine, every label of the person but "
           "the largest (by default, --merge relabel, they are kept and exported as the largest: label, merged_from)"),
    Reason("unidentifiable", "score", False, "too poor to tell whose face it is",
           "its quality, the recognizer's chance of verifying it against another photo of the person, is below "
           "unidentifiable_below; or it does not match its identity (beyond the far angle, or nearer another identity) "
           "and its quality is below unmatched_below (both the card's); or it is the worse of two copies of one photo "
           "in which the recognizer does not see the same face (unmatched_copy_of)"),
    Reason("far_from_dominant", "score", True, "far from its identity's dominant sub-center",
           "angle to the template, the face left out, beyond the far angle (the card's; 75 degrees for ArcFace)"),
    Reason("cross_id_conflict", "score", True, "nearer another identity's center than its own",
           "by more than conflict_margin (cosine)"),
    Reason("non_dominant_subcenter", "score", True, "in a non-dominant sub-center, within the far angle",
           "only with --drop-non-dominant (the paper keeps such faces)"),
    Reason("review_keep", "review", False, "a reviewer kept it", "a keep decision in OUT/reviews.parquet"),
    Reason("review_reject", "review", False, "a reviewer rejected it", "a reject decision in OUT/reviews.parquet"),
)

BY_NAME = {r.name: r for r in REASONS}
NAMES = tuple(r.name for r in REASONS)
SPINE = tuple(r.name for r in REASONS if r.stage in ("read", "decode", "detect", "embed"))
SCORING = tuple(r.name for r in REASONS if r.stage == "score")  # in order of precedence
LABEL_NOISE = tuple(r.name for r in REASONS if r.label_noise)


def is_columns(reason: pa.Array | pa.ChunkedArray) -> list[tuple[str, pa.Array]]:
    """``is_<reason>`` (bool, never null) for every reason but ok, in registry order."""
    values = np.asarray(pc.fill_null(reason, "").to_numpy(zero_copy_only=False), dtype=object)
    return [(f"is_{r.name}", pa.array(values == r.name)) for r in REASONS if r.name != "ok"]


def with_is_columns(t: pa.Table) -> pa.Table:
    """``t`` with its ``is_<reason>`` columns set from its ``reason`` (replaced where present, else
    appended)."""
    for name, col in is_columns(t["reason"]):
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, col) if i >= 0 else t.append_column(name, col)
    return t


def table() -> pa.Table:
    """The registry as a table (the ``reasons`` table of every SQL connection)."""
    return pa.table({"name": list(NAMES), "stage": [r.stage for r in REASONS],
                     "label_noise": [r.label_noise for r in REASONS], "description": [r.description for r in REASONS],
                     "rule": [r.rule for r in REASONS]})


def markdown() -> str:
    """The table of reasons in docs/scoring.md."""
    rows = ["| reason | stage | label noise | meaning | rule |", "|---|---|---|---|---|"]
    rows += [f"| `{r.name}` | {r.stage} | {'yes' if r.label_noise else ''} | {r.description} | {r.rule} |"
             for r in REASONS]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
