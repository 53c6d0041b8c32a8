"""Tests for the generic sharded TFRecord library (schema, writer, reader, inspect CLI)."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrecords_tools import inspect as inspect_cli
from tfrecords_tools import reader, schema, writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIELDS = {
    "gray": schema.Image("uint8"),
    "deep": schema.Image("uint16", channels=3),
    "real": schema.Image("float32"),
    "pid": schema.String(),
    "k": schema.Int(),
    "shape": schema.Int(length=3),
    "x": schema.Float(),
    "affine": schema.Float(length=4),
}


def make_record(i: int, rng: np.random.Generator) -> dict:
    return {
        "gray": rng.integers(0, 256, (6, 5), dtype=np.uint8),  # 2-D: stored as [H, W, 1]
        "deep": rng.integers(0, 65536, (4, 3, 3)).astype(np.uint16),  # > 255: byte order matters
        "real": rng.standard_normal((2, 7, 2)).astype(np.float32),
        "pid": f"patient-{i % 3}-é",
        "k": i,
        "shape": [-(2**40), 0, i],
        "x": 0.25 * i,
        "affine": np.array([1.5, -2.0, 3.0, i], dtype=np.float64),
    }


def assert_same(decoded: dict, record: dict) -> None:
    assert set(decoded) == set(record)
    for name, value in record.items():
        got = decoded[name]
        if isinstance(schema_field := FIELDS[name], schema.Image):
            want = value if value.ndim == 3 else value[:, :, None]
            assert got.dtype == np.dtype(schema_field.dtype) and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want)
        elif isinstance(value, (str, int, float)):
            assert got == value and type(got) is type(value), name
        else:
            np.testing.assert_allclose(got, np.asarray(value, dtype=got.dtype), err_msg=name)


def write_set(out_dir, name="s", n=10, per_shard=4, fields=FIELDS, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = [make_record(i, rng) for i in range(n)]
    with writer.ShardedWriter(out_dir, name, fields, examples_per_shard=per_shard) as w:
        for r in records:
            w.write(r)
    return records


# ------------------------------------------------------------------ schema


def test_round_trip_numpy_and_tf_parser():
    rng = np.random.default_rng(1)
    parser = schema.make_tf_parser(FIELDS)
    for i in range(3):
        record = make_record(i, rng)
        serialized = schema.encode(record, FIELDS)
        assert_same(schema.decode_numpy(serialized, FIELDS), record)

        parsed = parser(tf.constant(serialized))
        assert parsed["deep"].dtype == tf.uint16 and parsed["real"].dtype == tf.float32
        assert parsed["gray"].shape == (6, 5, 1)
        as_numpy = {k: v.numpy() for k, v in parsed.items()}
        as_numpy["pid"] = as_numpy["pid"].decode("utf-8")
        for key in ("k", "x"):
            as_numpy[key] = as_numpy[key].item()
        assert_same(as_numpy, record)


def test_uint16_is_little_endian_on_the_wire():
    img = np.array([[0x0102]], dtype=">u2")  # big-endian input is accepted and normalised
    fields = {"im": schema.Image("uint16")}
    example = tf.train.Example.FromString(schema.encode({"im": img}, fields))
    assert example.features.feature["im"].bytes_list.value[0] == b"\x02\x01"
    assert list(example.features.feature["im/shape"].int64_list.value) == [1, 1, 1]
    assert schema.decode_numpy(example.SerializeToString(), fields)["im"][0, 0, 0] == 0x0102


def test_tf_parser_static_channels_in_graph_mode():
    parser = schema.make_tf_parser(FIELDS)
    spec = tf.function(parser).get_concrete_function(tf.TensorSpec([], tf.string)).structured_outputs
    assert spec["deep"].shape.as_list() == [None, None, 3]
    assert spec["affine"].shape.as_list() == [4] and spec["k"].shape.rank == 0


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda r: r.pop("pid"), "pid"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r.update(gray=r["gray"].astype(np.uint16)), "gray"),
        (lambda r: r.update(gray=r["gray"].tolist()), "gray"),
        (lambda r: r.update(gray=np.zeros(5, np.uint8)), "gray"),
        (lambda r: r.update(deep=r["deep"][:, :, :2]), "deep"),
        (lambda r: r.update(real=np.full((2, 2), np.nan, np.float32)), "real"),
        (lambda r: r.update(pid=b"bytes"), "pid"),
        (lambda r: r.update(k=1.5), "k"),
        (lambda r: r.update(k=True), "k"),
        (lambda r: r.update(k="3"), "k"),
        (lambda r: r.update(shape=[1, 2]), "shape"),
        (lambda r: r.update(x=float("nan")), "x"),
        (lambda r: r.update(affine=[0.0, 1.0, float("inf"), 2.0]), "affine"),
        (lambda r: r.update(affine=[0.0] * 5), "affine"),
    ],
)
def test_encode_rejects_bad_records_naming_the_field(change, field):
    record = make_record(0, np.random.default_rng(0))
    change(record)
    with pytest.raises(ValueError, match=field):
        schema.encode(record, FIELDS)


def test_decode_rejects_mismatched_bytes():
    fields = {"im": schema.Image("uint8")}
    serialized = schema.encode({"im": np.zeros((2, 2), np.uint8)}, fields)
    with pytest.raises(ValueError, match="im"):
        schema.decode_numpy(serialized, {"im": schema.Image("uint16")})
    with pytest.raises(ValueError, match="other"):
        schema.decode_numpy(serialized, {**fields, "other": schema.Int()})


def test_fields_json_round_trip_and_errors():
    d = schema.fields_to_json(FIELDS)
    assert d["deep"] == {"type": "Image", "dtype": "uint16", "channels": 3}
    assert d["affine"] == {"type": "Float", "length": 4}
    assert schema.fields_from_json(json.loads(json.dumps(d))) == FIELDS
    with pytest.raises(ValueError, match="bad"):
        schema.fields_from_json({"bad": {"type": "Complex"}})
    with pytest.raises(ValueError, match="im"):
        schema.fields_from_json({"im": {"type": "Image", "dtype": "int8"}})
    with pytest.raises(ValueError, match="collides"):
        schema.check_fields({"a": schema.Image("uint8"), "a/shape": schema.Int(3)})


# ------------------------------------------------------------------ writer


def test_writer_shards_and_index(tmp_path):
    write_set(tmp_path, "s", n=10, per_shard=4)
    files = ["s-00000-of-00003.tfrecord.gz", "s-00001-of-00003.tfrecord.gz", "s-00002-of-00003.tfrecord.gz"]
    assert sorted(os.listdir(tmp_path)) == sorted(files + ["s.shards.json"])
    index = json.loads((tmp_path / "s.shards.json").read_text())
    assert index == {
        "name": "s",
        "compression": "GZIP",
        "fields": schema.fields_to_json(FIELDS),
        "shards": [{"file": f, "count": c} for f, c in zip(files, [4, 4, 2])],
        "count": 10,
    }
    assert reader.load_shard_set(tmp_path, "s") == index
    # each shard really holds what the index says
    for f, c in zip(files, [4, 4, 2]):
        n = sum(1 for _ in tf.data.TFRecordDataset(str(tmp_path / f), compression_type="GZIP"))
        assert n == c


def test_writer_info_matches_index_and_overwrite_drops_old_shards(tmp_path):
    write_set(tmp_path, "s", n=10, per_shard=4)
    rng = np.random.default_rng(5)
    with writer.ShardedWriter(tmp_path, "s", FIELDS, examples_per_shard=8, compression=None) as w:
        for i in range(3):
            w.write(make_record(i, rng))
    assert sorted(os.listdir(tmp_path)) == ["s-00000-of-00001.tfrecord", "s.shards.json"]
    assert w.info == json.loads((tmp_path / "s.shards.json").read_text())
    assert [ex["k"] for ex in reader.iterate(tmp_path, "s")] == [0, 1, 2]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_with_leaves_no_files(tmp_path, exc):
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    with pytest.raises(exc):
        with writer.ShardedWriter(out, "s", FIELDS, examples_per_shard=2) as w:
            for i in range(5):
                w.write(make_record(i, rng))
            assert any(e.startswith(".tmp-s-") for e in os.listdir(out))  # temp shards exist mid-write
            raise exc("stop")
    assert os.listdir(out) == []
    with pytest.raises(RuntimeError, match="not closed"):
        w.info


def test_invalid_record_aborts_write(tmp_path):
    record = make_record(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k"):
        with writer.ShardedWriter(tmp_path, "s", FIELDS) as w:
            w.write(record)
            w.write({**record, "k": "oops"})
    assert os.listdir(tmp_path) == []


def test_atomic_write_text(tmp_path):
    path = tmp_path / "a.json"
    writer.atomic_write_text(path, "one")
    writer.atomic_write_text(path, "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["a.json"]


# ------------------------------------------------------------------ reader


def test_iterate_in_file_order_round_trips(tmp_path):
    records = write_set(tmp_path, n=7, per_shard=3)
    decoded = list(reader.iterate(tmp_path, "s"))
    assert len(decoded) == 7
    for got, want in zip(decoded, records):
        assert_same(got, want)


def test_make_dataset_yields_every_example_once_per_epoch(tmp_path):
    write_set(tmp_path, n=11, per_shard=2)
    ds = reader.make_dataset(tmp_path, "s", shuffle_files=True, seed=3, cycle_length=3)
    for _ in range(2):  # the shard order is reshuffled per epoch, the content is not
        ks = collections.Counter(int(ex["k"]) for ex in ds)
        assert ks == collections.Counter(range(11))
    first = next(iter(ds))
    assert first["deep"].dtype == tf.uint16 and first["deep"].shape[2] == 3
    raw = list(reader.make_dataset(tmp_path, "s", parse=False).as_numpy_iterator())
    assert len(raw) == 11 and all(isinstance(r, bytes) for r in raw)
    batched = next(iter(reader.make_dataset(tmp_path, "s").map(lambda ex: ex["gray"]).batch(4)))
    assert batched.shape == (4, 6, 5, 1)


def test_empty_set_reads_as_empty(tmp_path):
    with writer.ShardedWriter(tmp_path, "empty", FIELDS):
        pass
    assert reader.load_shard_set(tmp_path, "empty")["shards"] == []
    assert list(reader.make_dataset(tmp_path, "empty")) == []
    assert reader.verify(tmp_path, "empty").ok


def test_missing_set_error_names_dir_and_set(tmp_path):
    write_set(tmp_path, "present", n=1)
    with pytest.raises(FileNotFoundError, match=r"(?s)" + str(tmp_path) + ".*'absent'.*present"):
        reader.load_shard_set(tmp_path, "absent")
    assert list(reader.list_shard_sets(tmp_path)) == ["present"]


def flip_middle_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_counts_groups_and_finds_flipped_byte(tmp_path):
    write_set(tmp_path, n=10, per_shard=4)
    report = reader.verify(tmp_path, "s", group_key="pid")
    assert report.ok and (report.count, report.groups, report.shards) == (10, 3, 3)
    with pytest.raises(ValueError, match="nope"):
        reader.verify(tmp_path, "s", group_key="nope")

    bad = tmp_path / "s-00001-of-00003.tfrecord.gz"
    flip_middle_byte(bad)
    report = reader.verify(tmp_path, "s", group_key="pid")
    assert not report.ok
    assert report.bad.file == str(bad) and 0 <= report.bad.index < 4 and report.bad.error
    assert report.count >= 6  # the two healthy shards were still read
    with pytest.raises(reader.CorruptRecordError, match="s-00001-of-00003"):
        list(reader.iterate(tmp_path, "s"))


def test_verify_reports_missing_shard(tmp_path):
    write_set(tmp_path, n=5, per_shard=4)
    os.remove(tmp_path / "s-00001-of-00002.tfrecord.gz")
    report = reader.verify(tmp_path, "s")
    assert report.count == 4 and "missing" in report.bad.error and report.bad.file.endswith("s-00001-of-00002.tfrecord.gz")


# ------------------------------------------------------------------ inspect CLI


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "tfrecords_tools.inspect", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_cli_reports_sets_and_writes_contact_sheet(tmp_path):
    data = tmp_path / "data"
    write_set(data, "a", n=6, per_shard=4)
    with writer.ShardedWriter(data, "b", {"gray": schema.Image("uint8"), "pid": schema.String()}) as w:
        for i in range(3):
            w.write({"gray": np.full((8, 8), 40 * i, np.uint8), "pid": f"q{i}"})
    png = tmp_path / "sheet.png"
    result = run_cli(data, "--png", png, "--n", 5, "--group_key", "pid")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a: 6 examples, 3 groups (pid), 2 shards, OK" in result.stdout
    assert "b: 3 examples, 3 groups (pid), 1 shards, OK" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        im.verify()
        assert im.size[0] > 100 and im.size[1] > 100
    assert sorted(os.listdir(tmp_path)) == ["data", "sheet.png"]  # no temp left beside the PNG


def test_cli_exits_nonzero_naming_corrupt_shard(tmp_path):
    write_set(tmp_path, n=10, per_shard=4)
    flip_middle_byte(tmp_path / "s-00002-of-00003.tfrecord.gz")
    result = run_cli(tmp_path)
    assert result.returncode == 1
    assert f"BAD: {tmp_path / 's-00002-of-00003.tfrecord.gz'} record " in result.stdout


def test_inspect_bad_inputs(tmp_path, capsys):
    assert inspect_cli.inspect_dir(str(tmp_path / "nowhere")) == 1
    assert "nowhere" in capsys.readouterr().err
    assert inspect_cli.inspect_dir(str(tmp_path)) == 1
    assert "no shard sets" in capsys.readouterr().err
    write_set(tmp_path, n=2)
    assert inspect_cli.inspect_dir(str(tmp_path), png=str(tmp_path / "no" / "x.png")) == 1
    assert "x.png" in capsys.readouterr().err


def test_batch_parser_matches_per_example_parser(tmp_path):
    records = write_set(tmp_path, n=5, per_shard=2)
    batch_parser = schema.make_tf_batch_parser(FIELDS)
    ds = reader.make_dataset(tmp_path, "s", parse=False, cycle_length=1).batch(3).map(batch_parser)
    batches = list(ds)
    assert [int(b["k"].shape[0]) for b in batches] == [3, 2]
    assert batches[0]["deep"].shape == (3, 4, 3, 3) and batches[0]["deep"].dtype == tf.uint16
    for j, record in enumerate(records):
        b = batches[j // 3]
        got = {k: v[j % 3].numpy() for k, v in b.items()}
        got["pid"] = got["pid"].decode("utf-8")
        got["k"], got["x"] = got["k"].item(), got["x"].item()
        assert_same(got, record)

    fields = {"im": schema.Image("uint8")}
    mixed = [schema.encode({"im": np.zeros(s, np.uint8)}, fields) for s in [(2, 3), (3, 2)]]  # same byte count
    with pytest.raises(tf.errors.InvalidArgumentError, match="share one shape"):
        schema.make_tf_batch_parser(fields)(tf.constant(mixed))
