"""Model cards: name, task, file, sha256, input, output and licence of a model file.

A model file is checked against its card before it is loaded: the card beside it
(``<stem>.card.json``, as ``curate retrain`` exports it) or a built-in one (``models/cards/<file
name>.json``, for the offline dlib models). A sha256 mismatch is an error: the file was swapped,
truncated or tampered with. A file with no card loads, identified by its sha256.
"""

from __future__ import annotations

import json
import os

from curate.errors import ModelError

CARDS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cards")


def file_sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_for(path: str) -> tuple[dict, str] | None:
    """(card, where it came from) for a model file, or None."""
    for p in (os.path.splitext(path)[0] + ".card.json", os.path.join(CARDS_DIR, os.path.basename(path) + ".json")):
        if os.path.isfile(p):
            try:
                with open(p, encoding="utf-8") as f:
                    return json.load(f), p
            except (OSError, ValueError) as exc:
                raise ModelError(f"{p}: unreadable model card: {exc}") from exc
    return None


def verified_sha256(path: str) -> str:
    """The file's sha256, after checking it against its card when it has one."""
    sha = file_sha256(path)
    found = card_for(path)
    if found and found[0].get("sha256") and found[0]["sha256"] != sha:
        raise ModelError(f"{path}: sha256 {sha[:16]}... does not match its model card {found[1]} "
                         f"({found[0]['sha256'][:16]}...); the file was changed or swapped")
    return sha
