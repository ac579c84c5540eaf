import numpy as np
import pyarrow as pa
import pytest

from curate.config import DetectConfig, Resources, RunConfig
from curate.errors import ConfigError, SchemaError
from curate.schema import (
    conform,
    decode_embeddings,
    encode_embeddings,
    images_schema,
    require,
)


def test_embeddings_roundtrip_float16_fixed_size_binary():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 512)).astype(np.float32)
    arr = encode_embeddings(emb)
    assert arr.type == pa.binary(1024)
    back = decode_embeddings(arr)
    np.testing.assert_array_equal(back, emb.astype(np.float16))
    # slices and nulls (faceless rows) survive
    np.testing.assert_array_equal(decode_embeddings(arr.slice(3, 2)), emb[3:5].astype(np.float16))
    with_null = arr.take(pa.array([0, None, 2]))
    out = decode_embeddings(with_null)
    assert np.isnan(out[1]).all() and np.array_equal(out[2], emb[2].astype(np.float16))


def test_conform_fills_nullable_and_rejects_missing_required():
    schema = images_schema(128)
    t = pa.table({"image_id": ["a"], "item": [0], "source": ["x.jpg"], "keep": [False], "reason": ["no_face"]})
    out = conform(t, schema)
    assert out.schema == schema and out["embedding"].null_count == 1
    with pytest.raises(SchemaError):
        conform(pa.table({"image_id": ["a"]}), schema)


def test_require_names_the_stage_and_columns():
    with pytest.raises(SchemaError, match="detect: input lacks columns \\['pixels'\\]"):
        require(pa.table({"image_id": ["a"]}), ["image_id", "pixels"], "detect")


def test_config_digest_is_stable_and_ignores_resources():
    a, b = RunConfig(), RunConfig()
    assert a.digest() == b.digest() and len(a.digest()) == 8
    assert RunConfig(detect=DetectConfig(min_face_size=30)).digest() != a.digest()
    assert RunConfig.from_dict(a.to_dict()) == a
    Resources(workers=4, batch_size=8)  # resources are a separate object: no effect on digest


@pytest.mark.parametrize("make", [
    lambda: DetectConfig(max_faces=0),
    lambda: DetectConfig(ambiguity_ratio=1.5),
    lambda: DetectConfig(det_size=100),
    lambda: RunConfig(shard_size=0),
    lambda: Resources(batch_size=0),
])
def test_invalid_configs_fail_at_construction(make):
    with pytest.raises(ConfigError):
        make()


def test_the_reason_registry_drives_selection_and_the_spine_enum():
    import pyarrow as pa

    from curate import reasons
    from curate.schema import Reason

    assert {r.value for r in Reason} == {"ok", *reasons.SPINE}
    assert set(reasons.LABEL_NOISE) <= set(reasons.SCORING)
    flags = dict(reasons.is_columns(pa.array(["ok", "duplicate", None])))
    assert "is_ok" not in flags and flags["is_duplicate"].to_pylist() == [False, True, False]
    assert len(flags) == len(reasons.REASONS) - 1
