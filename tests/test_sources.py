import base64
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.errors import InputError
from curate.io import recordio
from curate.io.sources import (
    FolderSource,
    ParquetSource,
    RecordIOSource,
    TSVSource,
    open_source,
)


def jpeg(seed=0, size=32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def fetch_all(src, max_bytes=1 << 20):
    index = src.plan()
    return index, src.fetch(index, max_bytes)


def test_folder_plan_labels_by_first_directory_and_skips_hidden(tmp_path):
    (tmp_path / "alice" / "sub").mkdir(parents=True)
    (tmp_path / "bob").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "alice" / "1.jpg").write_bytes(jpeg(1))
    (tmp_path / "alice" / "sub" / "2.jpg").write_bytes(jpeg(2))
    (tmp_path / "bob" / "1.jpg").write_bytes(jpeg(3))
    (tmp_path / "bob" / ".DS_Store").write_bytes(b"x")
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "loose.jpg").write_bytes(jpeg(4))
    index, got = fetch_all(FolderSource(str(tmp_path)))
    assert index["source"].to_pylist() == ["loose.jpg", "alice/1.jpg", "alice/sub/2.jpg", "bob/1.jpg"]
    assert index["identity"].to_pylist() == [None, "alice", "alice", "bob"]
    assert index["item"].to_pylist() == [0, 1, 2, 3]
    assert got["data"].to_pylist()[1] == jpeg(1) and got["reason"].to_pylist() == ["no_identity", None, None, None]


def test_folder_links_outside_root_and_oversized_files_are_recorded(tmp_path):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(1))
    root = tmp_path / "crawl"
    (root / "a").mkdir(parents=True)
    os.symlink(outside, root / "a" / "link.jpg")
    (root / "a" / "big.jpg").write_bytes(b"\xff" * 5000)
    _, got = fetch_all(FolderSource(str(root), follow_links=False), max_bytes=4000)
    rows = {r["source"]: r for r in got.to_pylist()}
    assert rows["a/link.jpg"]["reason"] == "read_error" and "outside" in rows["a/link.jpg"]["reason_detail"]
    assert rows["a/big.jpg"]["reason"] == "too_large" and rows["a/big.jpg"]["data"] is None
    _, got = fetch_all(FolderSource(str(root)), max_bytes=4000)  # by default the link is followed
    rows = {r["source"]: r for r in got.to_pylist()}
    assert rows["a/link.jpg"]["data"] == jpeg(1) and rows["a/link.jpg"]["resolved_path"] == str(outside)


def write_insightface_rec(path, labels):
    """A .rec laid out as insightface writes it: header record 0, images 1..n, identity records after."""
    n = len(labels)
    ids = sorted(set(labels))
    with recordio.RecordIOWriter(str(path) + ".rec", str(path) + ".idx") as w:
        w.write(0, recordio.pack(recordio.IRHeader(2, (n + 1, n + 1 + len(ids)), 0, 0), b""))
        for k, lab in enumerate(labels, 1):
            w.write(k, recordio.pack(recordio.IRHeader(0, float(lab), k, 0), jpeg(k)))
        for j, lab in enumerate(ids):
            first = labels.index(lab) + 1
            w.write(n + 1 + j, recordio.pack(recordio.IRHeader(2, (first, first + labels.count(lab)), 0, 0), b""))


def test_recordio_roundtrip_skips_header_and_identity_records(tmp_path):
    write_insightface_rec(tmp_path / "train", [0, 0, 1, 2, 2])
    src = open_source(str(tmp_path))  # a directory holding train.rec + train.idx
    assert isinstance(src, RecordIOSource)
    index, got = fetch_all(src)
    assert index["source"].to_pylist() == [f"train.rec#{k}" for k in range(1, 6)]
    assert got["identity"].to_pylist() == ["0", "0", "1", "2", "2"]
    assert [d == jpeg(k) for k, d in enumerate(got["data"].to_pylist(), 1)] == [True] * 5


def test_recordio_label_arrays_and_multipart_records(tmp_path):
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    payload = recordio.pack(recordio.IRHeader(2, (7.0, 1.0), 0, 0), jpeg(9))
    with open(rec, "wb") as f:  # one record split in two parts (cflag 1 then 3)
        a, b = payload[:50], payload[50:]
        f.write(recordio._HEAD.pack(recordio.MAGIC, (1 << 29) | len(a)) + a + b"\0" * ((4 - len(a) % 4) % 4))
        f.write(recordio._HEAD.pack(recordio.MAGIC, (3 << 29) | len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4))
    idx.write_text("5\t0\n")
    _, got = fetch_all(RecordIOSource(str(rec)))
    assert got["identity"].to_pylist() == ["7"] and got["data"][0].as_py() == jpeg(9)


def test_recordio_bad_offsets_are_read_errors_and_bad_index_is_input_error(tmp_path):
    write_insightface_rec(tmp_path / "t", [0, 1])
    size = os.path.getsize(tmp_path / "t.rec")
    (tmp_path / "t.idx").write_text(f"1\t{size + 100}\n2\t3\n")
    _, got = fetch_all(RecordIOSource(str(tmp_path / "t.rec")))
    assert got["reason"].to_pylist() == ["read_error", "read_error"]
    assert "end of file" in got["reason_detail"][0].as_py() and "bad magic" in got["reason_detail"][1].as_py()
    (tmp_path / "t.idx").write_text("1 2 3\n")
    with pytest.raises(InputError, match="key<TAB>offset"):
        RecordIOSource(str(tmp_path / "t.rec")).plan()


def test_msceleb_tsv(tmp_path):
    lines = [
        f"m.01\t1\thttp://a\thttp://p\tf1\tRECT\t{base64.b64encode(jpeg(1)).decode()}",
        "m.02\t2\thttp://b\thttp://p\tf2\tRECT\t%%%notbase64%%%",
        "m.03\tonly-two-columns",
        f"m.04\t1\thttp://c\thttp://p\tf4\tRECT\t{base64.b64encode(jpeg(4)).decode()}",
    ]
    p = tmp_path / "FaceImageCroppedWithAlignment.tsv"
    p.write_text("\n".join(lines) + "\n\n")
    src = open_source(str(p))
    assert isinstance(src, TSVSource)
    index, got = fetch_all(src)
    assert len(index) == 4
    rows = got.to_pylist()
    assert rows[0]["identity"] == "m.01" and rows[0]["data"] == jpeg(1)
    assert rows[1]["reason"] == "read_error" and "base64" in rows[1]["reason_detail"] and rows[1]["identity"] == "m.02"
    assert rows[2]["reason"] == "read_error" and "2 columns, the file 7" in rows[2]["reason_detail"]
    assert rows[3]["data"] == jpeg(4)


def test_parquet_bytes_and_manifest_paths(tmp_path):
    pq.write_table(pa.table({"identity": ["a", "b", "c"], "image": [jpeg(1), None, jpeg(3)]}),
                   tmp_path / "crawl.parquet", row_group_size=2)
    index, got = fetch_all(open_source(str(tmp_path / "crawl.parquet")))
    assert index["source"].to_pylist() == ["crawl.parquet#0", "crawl.parquet#1", "crawl.parquet#2"]
    assert got["data"].to_pylist() == [jpeg(1), None, jpeg(3)]
    assert got["reason"].to_pylist() == [None, "read_error", None]

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.jpg").write_bytes(jpeg(5))
    (tmp_path / "secret").write_text("no")
    m = tmp_path / "m"
    m.mkdir()
    pq.write_table(pa.table({"identity": ["x", "y", "z"],
                             "path": [str(tmp_path / "imgs" / "x.jpg"), "../../etc/passwd", "missing.jpg"]}),
                   m / "manifest.parquet")
    _, got = fetch_all(ParquetSource(str(m / "manifest.parquet")))
    rows = got.to_pylist()
    assert rows[0]["reason"] == "read_error" and "outside the allowed root" in rows[0]["reason_detail"]
    assert rows[1]["reason"] == "read_error" and "outside the allowed root" in rows[1]["reason_detail"]
    assert rows[2]["reason"] == "read_error"
    _, got = fetch_all(ParquetSource(str(m / "manifest.parquet"), path_root=str(tmp_path)))  # --path-root
    rows = got.to_pylist()
    assert rows[0]["data"] == jpeg(5)
    assert rows[1]["reason"] == "read_error"


def test_unknown_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_source(str(tmp_path / "nope"))
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(InputError, match="cannot tell the input format"):
        open_source(str(tmp_path / "x.zip"))
    pq.write_table(pa.table({"label": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no identity column"):
        open_source(str(tmp_path / "bad.parquet")).plan()
