"""curate export: .rec round trip through the spine's reader, WebDataset, folders, safe names."""

import collections
import hashlib
import json
import os
import tarfile

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate import audit
from curate.cli import main
from curate.errors import OutputError
from curate.io import recordio
from curate.io.export import export, safe_name
from curate.io.sources import open_source


def kept(run, min_quality=None):
    con = audit.connect(run)
    extra = "" if min_quality is None else f" AND quality >= {float(min_quality)}"  # test-side literal only
    return con.execute(f"SELECT identity, crop FROM curated WHERE keep AND crop IS NOT NULL{extra}").fetchall()


def test_rec_round_trip_through_the_spine_reader(scored_run, tmp_path):
    dest = tmp_path / "rec"
    r = CliRunner().invoke(main, ["export", scored_run, str(dest), "--format", "rec"])
    assert r.exit_code == 0, r.output
    rows = kept(scored_run)
    # arcface_torch's layout: property, header record 0 -> image keys 1..N
    n_ids = len({i for i, _ in rows})
    assert (dest / "property").read_text().strip() == f"{n_ids},112,112"
    idx = recordio.read_idx(str(dest / "train.idx"))
    with open(dest / "train.rec", "rb") as f:
        head, _ = recordio.unpack(recordio.read_at(f, dict(idx)[0]))
        assert head.flag == 2 and head.label == (len(rows) + 1, len(rows) + 1 + n_ids)
        for label in range(n_ids):  # identity records: contiguous key ranges
            a, b = recordio.unpack(recordio.read_at(f, dict(idx)[len(rows) + 1 + label]))[0].label
            assert b > a
    # ingest it back with the spine's own reader: same rows, same bytes, the identity names kept
    # (labels.tsv beside the .rec)
    src = open_source(str(dest / "train.rec"))
    fetched = src.fetch(src.plan(), 1 << 24)
    back = collections.Counter((i, hashlib.sha1(d).hexdigest())
                               for i, d in zip(fetched["identity"].to_pylist(), fetched["data"].to_pylist()))
    assert back == collections.Counter((i, hashlib.sha1(c).hexdigest()) for i, c in rows)
    # without it, the integer labels; with insightface-style 'label<TAB>name' lines passed as labels
    (dest / "labels.tsv").rename(dest / "names.txt")
    plain = open_source(str(dest / "train.rec"))
    numbers = set(plain.fetch(plain.plan(), 1 << 24)["identity"].to_pylist())
    assert numbers == {str(k) for k in range(n_ids)}
    lines = (dest / "names.txt").read_text().splitlines()[1:]
    (dest / "mine.tsv").write_text("".join(f"{ln.split(chr(9))[0]}\t{json.loads(ln.split(chr(9))[2])}\n" for ln in lines))
    named = open_source(str(dest / "train.rec"), labels=str(dest / "mine.tsv"))
    assert set(named.fetch(named.plan(), 1 << 24)["identity"].to_pylist()) == {i for i, _ in rows}
    assert pq.read_table(dest / "manifest.parquet").num_rows == len(rows)


def test_min_quality_webdataset_and_folders(scored_run, tmp_path):
    q = 40.0
    rows = kept(scored_run, q)
    r = export(scored_run, str(tmp_path / "wds"), "webdataset", min_quality=q, shard_size=10)
    assert r["images"] == len(rows)
    members = []
    for t in sorted((tmp_path / "wds").glob("shard-*.tar")):
        with tarfile.open(t) as tar:
            members += [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    assert len(members) == 3 * len(rows) and len(list((tmp_path / "wds").glob("shard-*.tar"))) == -(-len(rows) // 10)
    meta = [json.loads(b) for n, b in members if n.endswith(".json")]
    assert all(m["quality"] >= q for m in meta)
    r = export(scored_run, str(tmp_path / "dirs"), "folders")
    files = [p for p in (tmp_path / "dirs").rglob("*.jpg")]
    assert len(files) == len(kept(scored_run))
    assert all(p.resolve().is_relative_to((tmp_path / "dirs").resolve()) for p in files)


def test_export_refuses_a_non_empty_destination_and_leaves_nothing_half_written(scored_run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        export(scored_run, str(tmp_path / "busy"), "rec")
    assert os.listdir(tmp_path / "busy") == ["x"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.parametrize("label,expect", [
    ("../../etc/passwd", "etc_passwd"), ("a/b", "a_b"), (".hidden", "hidden"), ("..", "_"), ("", "_"),
    ("Zoë Saldaña", "Zoë_Saldaña"), ("m.0abc12", "m.0abc12"), ("C:\\x", "C_x"),
])
def test_identity_labels_become_safe_folder_names(label, expect):
    assert safe_name(label) == expect


def test_a_folder_export_is_laid_out_like_lfw_for_pairs_txt(scored_run, tmp_path):
    from models.eval import load_pairs_txt

    dest = tmp_path / "dirs"
    assert CliRunner().invoke(main, ["export", scored_run, str(dest), "--format", "folders"]).exit_code == 0
    man = pq.read_table(dest / "manifest.parquet").to_pylist()
    by_folder = collections.defaultdict(list)
    for r in man:
        by_folder[r["file"].split("/")[0]].append(r)
    big = next(f for f, rs in by_folder.items() if len(rs) >= 2)
    other = next(f for f in by_folder if f != big)
    assert [r["file"] for r in by_folder[big]][:2] == [f"{big}/{big}_0001.jpg", f"{big}/{big}_0002.jpg"]
    assert by_folder[big][0]["quality"] >= by_folder[big][1]["quality"]  # best quality first
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"1 2\n{big}\t1\t2\n{big}\t1\t{other}\t1\n")
    paths, same = load_pairs_txt(str(pairs), str(dest))
    assert all(os.path.exists(p) for p in paths) and list(same) == [True, False]


def test_labels_follow_imagefolder_and_webdataset_can_shuffle(scored_run, tmp_path):
    """Class labels are the sorted folder names' positions, as torchvision's ImageFolder numbers
    them: made safe, "Ana Lopez" becomes "Ana_Lopez", which sorts after "Ana_Bell", although the
    names sort the other way (a space before an underscore). --shuffle mixes identities across WebDataset shards."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    ids = [r[0] for r in audit.connect(str(run)).execute(
        "SELECT DISTINCT identity FROM curated WHERE keep ORDER BY 1 LIMIT 2").fetchall()]
    decisions = tmp_path / "relabel.json"
    decisions.write_text(json.dumps([{"scope": "identity", "key": ids[0], "action": "relabel", "value": "Ana Lopez"},
                                     {"scope": "identity", "key": ids[1], "action": "relabel", "value": "Ana_Bell"}]))
    cli = CliRunner()
    assert cli.invoke(main, ["review", "import", str(run), str(decisions), "--reviewer", "t"]).exit_code == 0
    assert cli.invoke(main, ["score", str(run)]).exit_code == 0
    dest = tmp_path / "folders"
    assert cli.invoke(main, ["export", str(run), str(dest), "--format", "folders"]).exit_code == 0
    rows = [line.split("\t") for line in (dest / "labels.tsv").read_text().splitlines()[1:]]
    folders = sorted(e.name for e in os.scandir(dest) if e.is_dir())  # torchvision's ImageFolder.find_classes
    assert [int(r[0]) for r in rows] == list(range(len(rows))) and [r[1] for r in rows] == folders
    label = {json.loads(r[2]): int(r[0]) for r in rows}
    assert "Ana Lopez" < "Ana_Bell" and label["Ana Lopez"] > label["Ana_Bell"]  # the folders: Ana_Bell < Ana_Lopez
    shuffled = tmp_path / "wds"
    r = cli.invoke(main, ["export", str(run), str(shuffled), "--format", "webdataset", "--shard-size", "20",
                          "--shuffle", "1"])
    assert r.exit_code == 0, r.output
    with tarfile.open(shuffled / "shard-000000.tar") as tar:
        first = {json.loads(tar.extractfile(m).read())["identity"] for m in tar.getmembers() if m.name.endswith(".json")}
    assert len(first) > 5  # identity by identity, 20 samples would hold two or three
    refused = cli.invoke(main, ["export", str(run), str(tmp_path / "rec"), "--format", "rec", "--shuffle", "1"])
    assert refused.exit_code != 0 and "WebDataset" in refused.output


def test_a_hugging_face_export_loads_with_its_features(scored_run, tmp_path):
    """`export --format hf` -> datasets.load_dataset(DEST): an Image column, the identities as a
    ClassLabel in the export's label order, quality; the same images as the manifest."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    dest = tmp_path / "hf"
    r = CliRunner().invoke(main, ["export", scored_run, str(dest), "--format", "hf", "--shard-size", "20"])
    assert r.exit_code == 0, r.output
    ds = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    manifest = pq.read_table(dest / "manifest.parquet")
    assert len(ds) == len(manifest) and len(list((dest / "data").iterdir())) == -(-len(ds) // 20)
    assert isinstance(ds.features["image"], datasets.Image) and isinstance(ds.features["label"], datasets.ClassLabel)
    labels = [ln.split("\t") for ln in (dest / "labels.tsv").read_text().splitlines()[1:]]
    assert ds.features["label"].names == [json.loads(x[2]) for x in labels]
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (112, 112)
    assert ds.features["label"].int2str(row["label"]) == row["identity"] and 0 <= row["quality"] <= 100
    assert sorted(ds["image_id"]) == sorted(manifest["image_id"].to_pylist())


def test_a_fiftyone_export_holds_every_image_with_its_decision(scored_run, tmp_path):
    """`export --format fiftyone`: every image, kept and rejected, in FiftyOne's LegacyFiftyOneDataset
    layout (what fiftyone's own importer parses: checked with it here where FiftyOne is installed;
    loading into its database needs MongoDB, which this machine cannot install)."""
    import base64
    import io
    import zlib

    import numpy as np

    dest = tmp_path / "fo"
    r = CliRunner().invoke(main, ["export", scored_run, str(dest), "--format", "fiftyone"])
    assert r.exit_code == 0, r.output
    samples = json.loads((dest / "samples.json").read_text())["samples"]
    n = CliRunner().invoke(main, ["sql", scored_run, "SELECT count(*) FROM curated", "--format", "csv"]).output.split()[-1]
    assert len(samples) == int(n)  # kept and rejected alike
    assert {s["reason"] for s in samples} >= {"ok"} and any(not s["keep"] for s in samples)
    for s in samples:  # the photo, else its crop; an unreadable file has neither (its sample says so)
        assert s["ground_truth"]["_cls"] == "Classification" and (dest / s["filepath"]).exists() == bool(s["photo"])
    assert sum(bool(s["photo"]) for s in samples) >= 0.9 * len(samples)
    faced = [s for s in samples if s.get("faces")]
    assert faced and all(sum("chosen" in d["tags"] for d in s["faces"]["detections"]) <= 1 for s in faced)
    assert all(0 <= v <= 1.0001 for s in faced for d in s["faces"]["detections"] for v in d["bounding_box"][:2])
    e = next(s["embedding"] for s in samples if "embedding" in s)
    vec = np.load(io.BytesIO(zlib.decompress(base64.b64decode(e["$binary"]["base64"]))))
    assert vec.ndim == 1 and abs(np.linalg.norm(vec) - 1) < 0.01


def test_fiftyones_own_importer_reads_the_export(scored_run, tmp_path):
    """Where FiftyOne is installed (`pip install fiftyone`; not in CI), its importer parses every
    sample of the export (no database is needed to parse, only to load)."""
    fo_importers = pytest.importorskip("fiftyone.utils.data.importers")
    dest = tmp_path / "fo"
    assert CliRunner().invoke(main, ["export", scored_run, str(dest), "--format", "fiftyone"]).exit_code == 0
    samples = json.loads((dest / "samples.json").read_text())["samples"]
    with fo_importers.LegacyFiftyOneDatasetImporter(str(dest)) as imp:
        parsed = list(imp)
    assert len(parsed) == len(samples) and parsed[0].ground_truth.label == samples[0]["ground_truth"]["label"]
