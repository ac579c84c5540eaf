"""Readers for raw crawls. Each input kind does two things:

``plan()``   enumerate the input once into the ``index`` table (schema.INDEX). The plan is written
             to the output directory and reused on resume, so a crawl that changes on disk cannot
             create duplicates or gaps.
``fetch()``  read the raw bytes for a slice of the index. A failure to read one item is recorded
             (``read_error`` / ``too_large`` with a detail) and never raised.

Supported: an image-folder tree (``identity/.../image``), MXNet RecordIO (``.rec`` + ``.idx``), an
MS-Celeb-1M TSV (identity column + base64 image column), and Parquet tables holding either image
bytes or paths (a manifest); and, for ``curate score-embeddings`` only, a file of embeddings.

Longer than 400 lines because it holds one reader class per input kind (a new format is one class
here plus its test), with the helpers they share.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import ConfigError, InputError
from curate.io import recordio
from curate.schema import INDEX, Reason

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".pgm"}  # where a file list
# must pick images out of a folder (the benchmark's and the sample crawl's sources); a crawl's own
# folders are read whole, every file a row

FETCHED = pa.schema(
    [
        ("item", pa.int64()),
        ("source", pa.string()),
        ("identity", pa.string()),
        ("data", pa.large_binary()),  # null when unreadable
        ("reason", pa.string()),  # null when read fine
        ("reason_detail", pa.string()),
        ("resolved_path", pa.string()),  # where a file reached through a link resolved to
    ]
)


@dataclass
class _Fetched:
    """Row accumulator for fetch()."""

    rows: dict = field(default_factory=lambda: {n: [] for n in FETCHED.names})

    def add(self, item, source, identity, data=None, reason=None, detail=None, resolved=None):
        if reason is None and (identity is None or not identity.strip()):
            # a face without a label cannot train anything: recorded, not decoded
            data, reason, detail = None, Reason.NO_IDENTITY.value, "empty identity label" if identity is not None else "no identity label"
        r = self.rows
        r["item"].append(item)
        r["source"].append(source)
        r["identity"].append(identity)
        r["data"].append(data)
        r["reason"].append(reason)
        r["reason_detail"].append(detail)
        r["resolved_path"].append(resolved)

    def table(self) -> pa.Table:
        return pa.table(self.rows, schema=FETCHED)


def _index(sources, identities=None, offsets=None, resolved=None) -> pa.Table:
    n = len(sources)
    return pa.table(
        {
            "item": pa.array(range(n), pa.int64()),
            "source": pa.array(sources, pa.string()),
            "identity": pa.array(identities if identities is not None else [None] * n, pa.string()),
            "offset": pa.array(offsets if offsets is not None else [None] * n, pa.int64()),
            "resolved": pa.array(resolved if resolved is not None else [None] * n, pa.string()),
        },
        schema=INDEX,
    )


def _int(name: str):
    def conv(v):
        try:
            return name, int(v)
        except ValueError:
            raise ConfigError(f"--{name.replace('_', '-')} {v!r}: a column index (an integer)") from None
    return conv


class Source:
    kind: str = ""
    CLI: dict = {}  # command-line option -> (this reader's option, value), see options_from

    def __init__(self, path: str, **options):
        self.path = os.path.abspath(path)
        self.options = options

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.path, "options": self.options}

    empty_identities: list[str] = []  # identity folders holding no file (set by plan)

    def check(self) -> None:
        """Cheap checks of the input's shape (well under a second, before anything starts):
        InputError naming the fix."""

    def layout(self) -> dict:
        """What a plan assumed of the input's shape; a resumed run compares it with the input's."""
        return {}

    def plan(self) -> pa.Table:
        raise NotImplementedError

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        raise NotImplementedError

    def empty_message(self) -> str:
        return f"{self.path} holds no records to curate"


def _read_file(path: str, root: str | None, max_bytes: int) -> tuple[bytes | None, str | None, str | None]:
    """Read at most max_bytes of a file -> (data, reason, detail); with ``root``, the file must
    resolve under it (links included)."""
    try:
        real = os.path.realpath(path)
        if root is not None and os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
            return None, Reason.READ_ERROR.value, "link points outside the input root (links are not followed: --no-follow-links)"
        if os.path.isdir(real):
            return None, Reason.READ_ERROR.value, "a directory link that loops back to a folder above it: not followed"
        size = os.path.getsize(real)
        if size > max_bytes:
            return None, Reason.TOO_LARGE.value, f"{size} bytes > max_bytes {max_bytes}"
        with open(real, "rb") as f:
            return f.read(max_bytes + 1), None, None
    except OSError as exc:
        return None, Reason.READ_ERROR.value, f"{type(exc).__name__}: {exc.strerror or exc}"


class FolderSource(Source):
    """``root/identity/.../file``: identity is the first directory under root. Hidden entries
    (names starting with '.') are not inputs. Links, to folders or files, are followed wherever
    they point, as ``find -L`` and torchvision's ImageFolder do (a crawl assembled from links to
    identity folders kept elsewhere), and the path a file resolved to is recorded (``resolved``);
    a folder link that loops back to a folder above it gets one row, recorded as ``read_error``.
    With the option ``follow_links=False`` (``--no-follow-links``) links must resolve inside root,
    and any other gets one ``read_error`` row.

    A crawl must hold identity folders: a root holding only files is refused (``check``), and
    files directly in a root that also holds identity folders are recorded as no_identity."""

    kind = "folder"
    CLI = {"no_follow_links": lambda v: ("follow_links", False)}

    @property
    def follow(self) -> bool:
        return self.options.get("follow_links", True)

    def layout(self) -> dict:
        """The shape of the crawl, from one listing of its root, once per reader (the check and the
        plan of one command ask for it): identity folders and loose files. A resumed run must see
        the same shape (a crawl re-laid out needs a new plan)."""
        if getattr(self, "_layout", None) is None:
            self._layout = self._list_root()
        return self._layout

    def _list_root(self) -> dict:
        folders = files = 0
        try:
            for e in os.scandir(self.path):
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                folders += is_dir
                files += not is_dir
        except OSError as exc:
            raise InputError(f"{self.path}: cannot list the crawl: {exc.strerror or exc}") from exc
        return {"identity folders": folders, "loose files": files}

    def check(self) -> None:
        shape = self.layout()
        if not shape["identity folders"] and shape["loose files"]:
            raise InputError(f"{self.path} holds {shape['loose files']} files and no identity folders: the labels come "
                             f"from folder names, so put each person's photos in a folder of their own "
                             f"({self.path}/<identity>/<image>), or pass a manifest (Parquet of identity, path)")
        if not shape["identity folders"]:
            raise InputError(f"nothing to curate: {self.empty_message()}")

    def plan(self) -> pa.Table:
        sources, identities, resolved = [], [], []
        root = os.path.realpath(self.path)
        files_in: dict[str, int] = {}  # identity folder -> files planned under it

        def walk(rel: str, real_here: str, chain: tuple[str, ...], linked: bool) -> None:
            here = os.path.join(self.path, rel) if rel else self.path
            try:
                entries = sorted(os.scandir(here), key=lambda e: e.name)
            except OSError:
                entries = []
            follow = []
            for e in entries:  # a folder's files first, then its sub-folders, each sorted by name
                if e.name.startswith("."):
                    continue
                sub = os.path.join(rel, e.name) if rel else e.name
                link = e.is_symlink()
                try:
                    is_dir = e.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                real = os.path.realpath(e.path) if link else os.path.join(real_here, e.name)
                if is_dir:
                    if not rel:
                        files_in.setdefault(e.name, 0)
                    inside = os.path.commonpath([real, root]) == root
                    if real not in chain and (self.follow or not link or inside):
                        follow.append((sub, real, linked or link))
                        continue
                ident = sub.split(os.sep)[0] if os.sep in sub else None
                sources.append(sub)  # files, and folder links not followed (a reason at fetch)
                identities.append(ident)
                resolved.append(real if (link or linked) and not is_dir else None)
                if ident is not None:
                    files_in[ident] = files_in.get(ident, 0) + 1
            for sub, real, lk in follow:
                walk(sub, real, (*chain, real), lk)

        walk("", root, (root,), False)
        self.empty_identities = sorted(k for k, v in files_in.items() if not v)
        return _index(sources, identities, resolved=resolved)

    def empty_message(self) -> str:
        return f"no files under {self.path} (hidden files and folders are skipped); expected identity/image files"

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        out = _Fetched()
        confine = None if self.follow else self.path
        resolved = index["resolved"].to_pylist() if "resolved" in index.column_names else [None] * len(index)
        for item, source, identity, real in zip(*(index[c].to_pylist() for c in ("item", "source", "identity")), resolved):
            data, reason, detail = _read_file(os.path.join(self.path, source), confine, max_bytes)
            out.add(item, source, identity, data, reason, detail, resolved=real)
        return out.table()


class RecordIOSource(Source):
    """insightface ``train.rec`` + ``train.idx``. The identity is the class label's name from
    ``labels`` (option; default ``labels.tsv`` beside the .rec, as ``curate export`` writes it:
    ``label, folder, identity`` with a header, or plain ``label<TAB>name`` lines), else the
    integer label itself."""

    kind = "rec"
    CLI = {"labels": lambda v: ("labels", os.path.abspath(v))}

    def __init__(self, path: str, **options):
        super().__init__(path, **options)
        base = os.path.splitext(self.path)[0]
        self.idx_path = options.get("idx") or base + ".idx"
        if not os.path.exists(self.idx_path):
            raise InputError(f"{self.path}: no index file {self.idx_path} beside it")
        beside = os.path.join(os.path.dirname(self.path), "labels.tsv")
        labels = options.get("labels") or (beside if os.path.exists(beside) else None)
        self.names = read_label_names(labels) if labels else {}

    def check(self) -> None:
        """The index's first line and the record it points to (not the whole file)."""
        try:
            with open(self.idx_path) as f:
                first = next((ln for ln in f if ln.strip()), None)
            if first is None:
                raise InputError(f"nothing to curate: {self.idx_path} is empty")
            offset = int(first.split("\t")[1])
            with open(self.path, "rb") as f:
                recordio.unpack(recordio.read_at(f, offset))
        except (recordio.RecordIOError, OSError, ValueError, IndexError) as exc:
            raise InputError(f"{self.path}: not a readable RecordIO file with its index {self.idx_path} "
                             f"(first record: {exc})") from exc

    def plan(self) -> pa.Table:
        try:
            keys = recordio.image_keys(self.path, recordio.read_idx(self.idx_path))
        except (recordio.RecordIOError, OSError) as exc:
            raise InputError(f"{self.path}: cannot read the record index: {exc}") from exc
        name = os.path.basename(self.path)
        return _index([f"{name}#{k}" for k, _ in keys], None, [o for _, o in keys])

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        out = _Fetched()
        with open(self.path, "rb") as f:
            for item, source, offset in zip(*(index[c].to_pylist() for c in ("item", "source", "offset"))):
                try:
                    header, data = recordio.unpack(recordio.read_at(f, offset, max_bytes + 64))
                except recordio.RecordIOError as exc:
                    out.add(item, source, None, None, Reason.READ_ERROR.value, str(exc))
                    continue
                label = int(header.label[0] if isinstance(header.label, tuple) else header.label)
                out.add(item, source, self.names.get(label, str(label)), data)
        return out.table()


def read_label_names(path: str) -> dict[int, str]:
    """{class label: identity name} from a labels file (see RecordIOSource)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\r\n").split("\t") for ln in f if ln.strip()]
    except OSError as exc:
        raise InputError(f"{path}: cannot read the labels file: {exc}") from exc
    head = lines[0] if lines else []
    named = "identity" in head  # curate export's: label, folder, identity (JSON-quoted)
    col = head.index("identity") if named else 1
    skip = 1 if named or (head and not head[0].strip().isdigit()) else 0  # a header line
    out = {}
    for n, row in enumerate(lines[skip:], start=skip + 1):
        try:
            out[int(row[0])] = json.loads(row[col]) if named else row[col]
        except (ValueError, IndexError) as exc:
            raise InputError(f"{path}: line {n}: expected 'label<TAB>name' ({exc})") from exc
    return out


class TSVSource(Source):
    """MS-Celeb-1M style TSV: one image per line, identity in column ``identity_col`` (default 0,
    the Freebase MID), base64 image in column ``data_col`` (default -1, the last)."""

    kind = "tsv"
    CLI = {"identity_col": _int("identity_col"), "data_col": _int("data_col")}

    def plan(self) -> pa.Table:
        offsets = []
        with open(self.path, "rb") as f:
            pos = 0
            for line in f:
                if line.strip():
                    offsets.append(pos)
                pos += len(line)
        name = os.path.basename(self.path)
        return _index([f"{name}@{o}" for o in offsets], None, offsets)

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        id_col = int(self.options.get("identity_col", 0))
        data_col = int(self.options.get("data_col", -1))
        out = _Fetched()
        # base64 is 4/3 of the payload; read a little past the line limit to detect overlong lines.
        line_limit = max_bytes * 4 // 3 + 65536
        with open(self.path, "rb") as f:
            n_cols = f.readline(line_limit + 1).count(b"\t") + 1  # the file's first line sets the width
            for item, source, offset in zip(*(index[c].to_pylist() for c in ("item", "source", "offset"))):
                f.seek(offset)
                line = f.readline(line_limit + 1)
                if len(line) > line_limit:
                    out.add(item, source, None, None, Reason.TOO_LARGE.value, f"line longer than {line_limit} bytes")
                    continue
                cols = line.rstrip(b"\r\n").split(b"\t")
                if len(cols) != n_cols:
                    out.add(item, source, None, None, Reason.READ_ERROR.value, f"line has {len(cols)} columns, the file {n_cols}")
                    continue
                try:
                    identity = cols[id_col].decode("utf-8")
                    data = base64.b64decode(cols[data_col], validate=True)
                except IndexError:
                    out.add(item, source, None, None, Reason.READ_ERROR.value, f"no column {id_col} or {data_col}")
                    continue
                except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
                    ident = cols[id_col].decode("utf-8", "replace") if len(cols) > id_col else None
                    out.add(item, source, ident, None, Reason.READ_ERROR.value, f"bad base64/utf-8: {exc}")
                    continue
                out.add(item, source, identity, data)
        return out.table()


def _strip_dot(member: str) -> str:
    """'./Person/img.jpg' (``tar -C crawl -cf x.tar .``) -> 'Person/img.jpg'."""
    while member.startswith("./"):
        member = member[2:]
    return member


class TarSource(Source):
    """An uncompressed tar of ``identity/.../file`` members (a crawl shipped as an archive), read
    in place by member offset: nothing is extracted to disk. Member names that are absolute or
    climb out (``../../etc/passwd``) and members that are not regular files (links, devices) are
    recorded as read errors; directory entries are not inputs."""

    kind = "tar"

    def plan(self) -> pa.Table:
        sources, identities, offsets = [], [], []
        name = os.path.basename(self.path)
        try:
            with tarfile.open(self.path, "r:") as tar:
                for m in tar:
                    if m.isdir():
                        continue
                    member = _strip_dot(m.name)
                    parts = member.split("/")
                    sources.append(f"{name}:{m.name}")
                    identities.append(parts[0] if len(parts) > 1 else None)
                    offsets.append(m.offset_data if m.isfile() else -1)
        except tarfile.ReadError as exc:
            raise InputError(f"{self.path}: not an uncompressed tar ({exc}); decompress it first "
                             "(random access needs a plain .tar)") from exc
        return _index(sources, identities, offsets)

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        out = _Fetched()
        with open(self.path, "rb") as f:
            for item, source, identity, offset in zip(*(index[c].to_pylist() for c in ("item", "source", "identity", "offset"))):
                member = source.split(":", 1)[1]
                parts = member.split("/")
                if member.startswith("/") or ".." in parts or not member:
                    out.add(item, source, None, None, Reason.READ_ERROR.value, "unsafe member name (absolute or '..')")
                    continue
                if offset < 0:
                    out.add(item, source, identity, None, Reason.READ_ERROR.value, "not a regular file (link or device member)")
                    continue
                f.seek(offset - tarfile.BLOCKSIZE)
                try:
                    size = tarfile.TarInfo.frombuf(f.read(tarfile.BLOCKSIZE), "utf-8", "surrogateescape").size
                except tarfile.TarError as exc:
                    out.add(item, source, identity, None, Reason.READ_ERROR.value, f"bad member header: {exc}")
                    continue
                if size > max_bytes:
                    out.add(item, source, identity, None, Reason.TOO_LARGE.value, f"{size} bytes > max_bytes {max_bytes}")
                    continue
                data = f.read(size)
                if len(data) < size:
                    out.add(item, source, identity, None, Reason.READ_ERROR.value, f"member truncated ({len(data)} of {size} bytes)")
                    continue
                out.add(item, source, identity, data)
        return out.table()


class ParquetSource(Source):
    """A Parquet file (or a directory of them) with an identity column and either an image-bytes
    column (``image_col``, default 'image') or a path column (``path_col``, default 'path'; paths are
    relative to the file's directory unless absolute, and must lie under ``path_root``, by default
    the manifest's directory)."""

    kind = "parquet"
    CLI = {"identity_col": lambda v: ("identity_col", v), "data_col": lambda v: ("image_col", v),
           "path_col": lambda v: ("path_col", v), "path_root": lambda v: ("path_root", os.path.abspath(v))}

    def _files(self) -> list[str]:
        if os.path.isdir(self.path):
            files = sorted(str(p) for p in Path(self.path).rglob("*.parquet"))
            if not files:
                raise InputError(f"{self.path}: no .parquet files")
            return files
        return [self.path]

    def _base(self) -> str:
        return self.path if os.path.isdir(self.path) else os.path.dirname(self.path)

    def _columns(self, schema: pa.Schema) -> tuple[str, str, str]:
        ident = self.options.get("identity_col", "identity")
        img = self.options.get("image_col", "image")
        path = self.options.get("path_col", "path")
        if ident not in schema.names:
            raise InputError(f"{self.path}: no identity column {ident!r} (has {schema.names})")
        if img in schema.names:
            return ident, img, "bytes"
        if path in schema.names:
            return ident, path, "path"
        raise InputError(f"{self.path}: neither an image column {img!r} nor a path column {path!r}")

    def plan(self) -> pa.Table:
        sources, identities = [], []
        for file in self._files():
            pf = pq.ParquetFile(file)
            ident, _, _ = self._columns(pf.schema_arrow)
            ids = pf.read(columns=[ident])[ident].cast(pa.string()).to_pylist()
            name = os.path.relpath(file, self._base())
            sources += [f"{name}#{r}" for r in range(len(ids))]
            identities += ids
        return _index(sources, identities)

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:
        out = _Fetched()
        base = self._base()
        rows = index.to_pylist()
        by_file: dict[str, list[dict]] = {}
        for r in rows:
            name, row = r["source"].rsplit("#", 1)
            r["_row"] = int(row)
            by_file.setdefault(name, []).append(r)
        fetched = {}
        for name, rs in by_file.items():
            file = os.path.join(base, name)
            pf = pq.ParquetFile(file)
            ident, col, how = self._columns(pf.schema_arrow)
            values = _read_rows(pf, col, [r["_row"] for r in rs])
            for r, v in zip(rs, values):
                if v is None:
                    fetched[r["item"]] = (None, Reason.READ_ERROR.value, f"null {col!r}")
                elif how == "bytes":
                    ok = len(v) <= max_bytes
                    fetched[r["item"]] = (v, None, None) if ok else (None, Reason.TOO_LARGE.value, f"{len(v)} bytes")
                else:
                    fetched[r["item"]] = _read_manifest_path(v, base, max_bytes, self.options.get("path_root"))
        for r in rows:
            data, reason, detail = fetched[r["item"]]
            out.add(r["item"], r["source"], r["identity"], data, reason, detail)
        return out.table()


def _read_rows(pf: pq.ParquetFile, column: str, rows: list[int]) -> list:
    """Values of ``column`` at ``rows``, reading only the row groups that hold them."""
    md = pf.metadata
    starts, s = [], 0
    for g in range(md.num_row_groups):
        starts.append(s)
        s += md.row_group(g).num_rows
    need = sorted({max(i for i, st in enumerate(starts) if st <= r) for r in rows})
    values = {}
    for g in need:
        col = pf.read_row_group(g, columns=[column])[column].to_pylist()
        for i, v in enumerate(col):
            values[starts[g] + i] = v
    return [values.get(r) for r in rows]


def _read_manifest_path(path: str, base: str, max_bytes: int, root: str | None = None):
    """A manifest's path: relative to its directory; absolute or relative, it must resolve under
    ``root`` (default: the manifest's directory), so a crafted manifest cannot read /etc/passwd."""
    root = os.path.realpath(root or base)
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))
    if os.path.commonpath([os.path.realpath(full), root]) != root:
        return None, Reason.READ_ERROR.value, f"path outside the allowed root {root} (see --path-root)"
    return _read_file(full, root, max_bytes)


SOURCES = {cls.kind: cls for cls in (FolderSource, RecordIOSource, TSVSource, TarSource, ParquetSource)}


def guess(path: str) -> tuple[str, str]:
    """(kind, the path its reader opens) from what ``path`` looks like: a folder holding a .rec with
    its .idx is that .rec; a folder of .parquet files and no sub-folder is Parquet; any other
    folder is a folder crawl; a file by its extension."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    p = Path(path)
    if p.is_dir():
        recs = sorted(p.glob("*.rec"))
        if recs and recs[0].with_suffix(".idx").exists():
            return "rec", str(recs[0])
        if not any(q.is_dir() for q in p.iterdir()) and any(p.glob("*.parquet")):
            return "parquet", path
        return "folder", path
    kind = {".rec": "rec", ".tsv": "tsv", ".parquet": "parquet", ".tar": "tar"}.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: cannot tell the input format; pass --format")
    return kind, path


def open_source(path: str, kind: str | None = None, **options) -> Source:
    """The reader of ``kind``, or of what ``path`` looks like (``guess``)."""
    if kind is None:
        kind, path = guess(path)
    elif not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    if kind not in SOURCES:
        raise InputError(f"unknown input format {kind!r}; one of {sorted(SOURCES)}")
    return SOURCES[kind](path, **options)


def options_from(kind: str | None, path: str, given: dict) -> dict:
    """A reader's options from the command line's (``given``: option name -> value, None or False
    when not set): each reader declares the ones it takes (``CLI``); one set for another kind of
    input is a ConfigError naming it."""
    cls = SOURCES[kind or guess(path)[0]]
    set_ = {k: v for k, v in given.items() if v is not None and v is not False}
    stray = sorted(set(set_) - set(cls.CLI))
    if stray:
        raise ConfigError(f"--{stray[0].replace('_', '-')} is not an option of {cls.kind} input "
                          f"(it takes {', '.join('--' + k.replace('_', '-') for k in cls.CLI) or 'none'})")
    return dict(cls.CLI[k](v) for k, v in set_.items())


# -- embeddings as an input ----------------------------------------------------------------------
# ``curate score-embeddings`` turns a file of embeddings made with the user's own recognizer into a
# normal run directory (one face a row, no photo): a ``.npy`` (N, D) matrix, memory-mapped, with
# labels (and optionally image ids and raw norms) in ``.npy`` or one-per-line ``.txt`` files, or a
# Parquet table with an ``embedding`` list column and those as columns. Not a ``curate run`` input.

def _vector(spec: str | None, table: pa.Table | None, n: int, what: str, numeric: bool = False):
    """A column of ``table`` named ``spec``, else a .npy / .txt file at ``spec``; None without spec."""
    if spec is None:
        return None
    if table is not None and spec in table.column_names:
        col = table[spec]
    elif os.path.isfile(spec):
        if spec.endswith(".npy"):
            col = pa.array(np.load(spec, allow_pickle=not numeric).tolist())
        else:
            with open(spec, encoding="utf-8") as f:
                col = pa.array([ln.rstrip("\n") for ln in f if ln.strip()])
    else:
        raise InputError(f"{what} {spec!r}: neither a column of the input nor a file")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(col) != n:
        raise InputError(f"{what} {spec!r}: {len(col)} values for {n} embeddings")
    return col.cast(pa.float32()) if numeric else col.cast(pa.string())


class EmbeddingsSource(Source):
    """A file of embeddings (module doc); options ``labels`` (required), ``ids``, ``norms``."""

    kind = "embeddings"

    def load(self) -> tuple[object, pa.Array, pa.Array, np.ndarray | None]:
        """(the (N, D) matrix, memory-mapped where it can be; labels; image ids; raw norms or None)."""
        table = None
        if self.path.endswith(".npy"):
            try:
                emb = np.load(self.path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(f"{self.path}: not a readable .npy matrix ({exc})") from exc
        elif self.path.endswith(".parquet"):
            table = pq.read_table(self.path)
            if "embedding" not in table.column_names:
                raise InputError(f"{self.path}: no 'embedding' column (has {table.column_names})")
            emb = np.asarray(table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False),
                             np.float32).reshape(len(table), -1)
        else:
            raise InputError(f"{self.path}: embeddings are a .npy matrix or a .parquet table with an 'embedding' column")
        if getattr(emb, "ndim", 0) != 2 or not len(emb):
            raise InputError(f"{self.path}: expected an (N, D) matrix, got shape {getattr(emb, 'shape', None)}")
        n = len(emb)
        labels = _vector(self.options.get("labels"), table, n, "--labels")
        if labels is None:
            raise InputError("--labels: the identity of each row is needed (a column of the Parquet file, or a .npy/.txt file)")
        ids = _vector(self.options.get("ids"), table, n, "--ids")
        if ids is None:
            ids = pa.array([f"row{i}" for i in range(n)])
        if len(pc.unique(ids)) != n:
            raise InputError("--ids: image ids repeat; each row needs its own")
        norms = _vector(self.options.get("norms"), table, n, "--norms", numeric=True)
        return emb, labels, ids, None if norms is None else norms.to_numpy(zero_copy_only=False)

    def check(self) -> None:
        self.load()

    def plan(self) -> pa.Table:
        _, labels, ids, _ = self.load()
        return _index(ids.to_pylist(), labels.to_pylist())

    def fetch(self, index: pa.Table, max_bytes: int) -> pa.Table:  # there are no photos to read
        raise InputError(f"{self.path}: a run of embeddings has no photos")


def source_from_description(d: dict) -> Source:
    cls = EmbeddingsSource if d["kind"] == EmbeddingsSource.kind else SOURCES[d["kind"]]
    return cls(d["path"], **d["options"])
