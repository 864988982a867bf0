"""Packing to tar shards on a real (loopback moto) S3 server and a local folder, reading them back through Ray Data,
and the failure modes: truncated shards, corrupt media inside shards, a missing bucket, an unreachable endpoint."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.exceptions import ResponseStreamingError

from seedr1.config import ConfigError, DataConfig, S3Config
from seedr1.data.pipeline import DataQualityError, RecordStream, _shard_rows, build_dataset, dataset_rows, iter_local
from seedr1.data.shards import MANIFEST, iter_tar_members, pack, read_manifest
from seedr1.data.synthetic import SynthSpec, write_synthetic
from seedr1.storage import S3Storage, StorageError, StorageNotFound, get_storage

SPEC = SynthSpec(seed=0, train=16, l1=8, l2=4, l3=8)
FILES = ["annotations/training_6k.jsonl", "annotations/training_with_cot_6k.jsonl",
         "annotations/validation_L1.jsonl", "annotations/validation_L2.jsonl", "annotations/validation_L3.jsonl"]
COUNTS = {"training_6k.jsonl": 16, "training_with_cot_6k.jsonl": 16, "validation_L1.jsonl": 8,
          "validation_L2.jsonl": 4, "validation_L3.jsonl": 8}
SHARD_SIZE = 200_000  # several shards for the small data set
SIZE = 32
BUCKET = "seedr1-test"
QUIET = lambda *a, **k: None  # noqa: E731


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3cfg(s3_server) -> S3Config:
    cfg = S3Config(endpoint_url=s3_server, access_key="testing", secret_key="testing", region="us-east-1",
                   max_attempts=2, connect_timeout_s=2)
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "root"
    write_synthetic(root, SPEC)
    return root


@pytest.fixture(scope="module")
def packed(root, s3cfg):
    dest = f"s3://{BUCKET}/clean"
    return dest, pack(str(root), dest, shard_size=SHARD_SIZE, s3=s3cfg, log=QUIET)


def _local_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(root=str(root), frame_size=SIZE, image_size=SIZE, **kw)


def _shard_cfg(shards: str, s3cfg: S3Config | None = None, **kw) -> DataConfig:
    return DataConfig(shards=shards, s3=s3cfg or S3Config(), frame_size=SIZE, image_size=SIZE, **kw)


def _assert_same_records(actual: list, expected: list) -> None:
    assert [r.sample_id for r in actual] == [r.sample_id for r in expected]
    for a, e in zip(actual, expected):
        assert (a.kind, a.gold_letter, a.options, a.messages, a.response, a.task_level) == \
            (e.kind, e.gold_letter, e.options, e.messages, e.response, e.task_level), a.sample_id
        for name in ("video", "image"):
            x, y = getattr(a, name), getattr(e, name)
            assert (x is None) == (y is None), (a.sample_id, name)
            if x is not None:
                assert x.dtype == np.uint8 and np.array_equal(x, y), (a.sample_id, name)


@pytest.fixture(scope="module")
def local_records(root):
    cfg = _local_cfg(root)
    return list(RecordStream(iter_local(cfg, FILES), cfg))


# ---- packing ------------------------------------------------------------------------------------------------------
def test_pack_to_s3_manifest(packed, s3cfg):
    dest, result = packed
    manifest = read_manifest(dest, s3cfg)
    storage = S3Storage(s3cfg)
    assert result.records == manifest["records"] == sum(COUNTS.values())
    assert result.shards == len(manifest["shards"]) >= 3
    assert result.uploaded == result.shards and result.skipped == 0
    assert result.manifest == f"{dest}/{MANIFEST}"
    assert sorted(storage.list(dest + "/")) == sorted([f"{dest}/{s['name']}" for s in manifest["shards"]]
                                                      + [result.manifest])
    per_file: dict[str, int] = {}
    for shard in manifest["shards"]:
        data = storage.read_bytes(f"{dest}/{shard['name']}")
        assert len(data) == shard["bytes"]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert storage.head(f"{dest}/{shard['name']}")["Metadata"]["sha256"] == shard["sha256"]
        members = list(iter_tar_members(data, shard["name"]))
        assert all(m["key"] is not None for m in members)
        assert len(members) == shard["records"] == sum(shard["files"].values())
        for m in members:
            meta = json.loads(m["json"])
            per_file[meta["file"]] = per_file.get(meta["file"], 0) + 1
            if meta["kind"] == "cot":
                has_video = any(p["type"] == "video" for p in meta["record"]["prompt"][0]["content"])
            else:
                has_video = bool(meta["record"]["task_progress_metadata"])
            assert ("mp4" in m) == has_video and "png" in m  # the video only when it is used
        for name, n in shard["files"].items():
            assert n == sum(1 for m in members if json.loads(m["json"])["file"] == name)
    assert per_file == COUNTS
    assert manifest["bytes"] == result.bytes == sum(s["bytes"] for s in manifest["shards"])


def test_repack_skips_every_shard(packed, root, s3_env):
    """Second pack to the same prefix (credentials and endpoint from the AWS variables only): nothing re-uploaded."""
    dest, first = packed
    before = read_manifest(dest)
    logged = []
    again = pack(str(root), dest, shard_size=SHARD_SIZE, log=logged.append)
    assert again.skipped == again.shards == first.shards and again.uploaded == 0
    assert again.records == first.records and again.bytes == first.bytes
    assert read_manifest(dest)["shards"] == before["shards"]  # same shards, same checksums
    assert len(logged) == first.shards and all("skipped" in line for line in logged)


def test_pack_and_read_local_folder(root, tmp_path, ray_cluster, local_records):
    dest = str(tmp_path / "shards")
    first = pack(str(root), dest, shard_size=SHARD_SIZE, log=QUIET)
    manifest = read_manifest(dest)
    assert first.uploaded == first.shards == len(manifest["shards"]) and first.records == sum(COUNTS.values())
    for shard in manifest["shards"]:
        data = (Path(dest) / shard["name"]).read_bytes()
        assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
    again = pack(str(root), dest, shard_size=SHARD_SIZE, log=QUIET)
    assert again.skipped == again.shards and again.uploaded == 0
    files = FILES[2:]  # validation files only
    cfg = _shard_cfg(dest)
    records = list(RecordStream(build_dataset(cfg, files).iter_rows(), cfg))
    expected = [r for r in local_records if r.kind == "validation"]
    _assert_same_records(records, expected)


def test_pack_includes_the_full_training_file(root, tmp_path, ray_cluster):
    # Any annotations/*.jsonl whose kind its name tells is packed, so training from shards can read it.
    src = tmp_path / "root"
    shutil.copytree(root, src)
    lines = (src / "annotations" / "training_6k.jsonl").read_text().splitlines()[:5]
    (src / "annotations" / "training_full.jsonl").write_text("\n".join(lines) + "\n")
    dest = str(tmp_path / "shards")
    result = pack(str(src), dest, shard_size=SHARD_SIZE, log=QUIET)
    assert sum(shard["files"].get("training_full.jsonl", 0) for shard in read_manifest(dest)["shards"]) == 5
    assert result.records == sum(COUNTS.values()) + 5
    cfg = _shard_cfg(dest)
    ids = [r.sample_id for r in RecordStream(build_dataset(cfg, ["annotations/training_full.jsonl"]).iter_rows(), cfg)]
    assert sorted(ids) == sorted(json.loads(line)["sample_id"] for line in lines)


def test_pack_from_an_s3_root_uses_the_given_config(root, s3cfg, tmp_path, monkeypatch):
    """An s3:// data root with an explicit S3Config: annotations and media are read through that config, not the
    environment (which here points at a closed port)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    storage = S3Storage(s3cfg)
    src = f"s3://{BUCKET}/root-copy"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        storage.upload_file(path, f"{src}/{path.relative_to(root).as_posix()}")
    from_s3 = pack(src, str(tmp_path / "from-s3"), shard_size=SHARD_SIZE, s3=s3cfg, log=QUIET)
    from_local = pack(str(root), str(tmp_path / "from-local"), shard_size=SHARD_SIZE, log=QUIET)
    assert from_s3.records == from_local.records == sum(COUNTS.values())
    a, b = read_manifest(str(tmp_path / "from-s3")), read_manifest(str(tmp_path / "from-local"))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]  # byte-identical shards


# ---- reading through Ray Data -------------------------------------------------------------------------------------
def test_ray_read_from_s3_matches_local(packed, s3cfg, ray_cluster, local_records, tmp_path):
    dest, _ = packed
    cfg = _shard_cfg(dest, s3cfg, rejects_path=str(tmp_path / "rejects.jsonl"))
    stream = RecordStream(dataset_rows(build_dataset(cfg, FILES)), cfg)
    records = list(stream)
    assert len(records) == sum(COUNTS.values()) and stream.rejected == 0
    assert not (tmp_path / "rejects.jsonl").exists()
    _assert_same_records(records, local_records)
    assert any(r.video is not None for r in records) and any(r.video is None for r in records)


def _upload_shard(dest: str, name: str, data: bytes, files: dict, s3cfg: S3Config) -> None:
    storage = S3Storage(s3cfg)
    storage.write_bytes(f"{dest}/{name}", data)
    manifest = {"format": "seedr1-shards/1", "records": sum(files.values()), "bytes": len(data),
                "shards": [{"name": name, "records": sum(files.values()), "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest(), "files": files}]}
    storage.write_bytes(f"{dest}/{MANIFEST}", json.dumps(manifest).encode())


def test_truncated_shard_gives_records_then_a_reject_per_lost_record(packed, s3cfg, ray_cluster, tmp_path):
    """The manifest says how many records the shard holds: each one the cut lost is a reject, so the bad fraction
    is the real one (one reject for a whole lost shard never tripped max_bad_fraction)."""
    dest, _ = packed
    shard = read_manifest(dest, s3cfg)["shards"][0]
    full = S3Storage(s3cfg).read_bytes(f"{dest}/{shard['name']}")
    with tarfile.open(fileobj=io.BytesIO(full)) as tar:
        offsets = {m.name: m.offset_data + m.size for m in tar.getmembers()}  # where each member's data ends
    all_ids = [json.loads(m["json"])["record"]["sample_id"] for m in iter_tar_members(full, "full")]
    cut = len(full) // 2
    # records whose members all end before the cut and that are not the record being read at the cut
    complete = [k for k in dict.fromkeys(n.split(".")[0] for n in offsets)
                if all(end <= cut for n, end in offsets.items() if n.startswith(k + "."))]
    bad_dest = f"s3://{BUCKET}/truncated"
    _upload_shard(bad_dest, shard["name"], full[:cut], shard["files"], s3cfg)
    files = [f for f in FILES if Path(f).name in shard["files"]]
    rows = list(build_dataset(_shard_cfg(bad_dest, s3cfg), files).iter_rows())  # no crash
    ok, bad = [r for r in rows if r["ok"]], [r for r in rows if not r["ok"]]
    got = [r["sample_id"] for r in ok]
    assert 0 < len(got) < len(all_ids) and got == all_ids[:len(got)]  # the records before the cut came through
    assert len(complete) - 1 <= len(got) <= len(complete)
    lost = shard["records"] - len(got)
    assert len(rows) == shard["records"] and len(bad) == lost > 1 and rows[len(got):] == bad
    assert all(r["file"] == shard["name"] and "truncated or corrupt" in r["reason"] for r in bad)
    assert bad[-1]["reason"].endswith(f"(lost record {lost} of {lost})")

    rejects = tmp_path / "rejects.jsonl"
    lenient = _shard_cfg(bad_dest, s3cfg, max_bad_fraction=0.9)
    stream = RecordStream(iter(rows), lenient, rejects_path=str(rejects))
    assert [r.sample_id for r in stream] == got and stream.rejected == lost
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(written) == lost and all(w["file"] == shard["name"] and "truncated" in w["reason"] for w in written)

    # below the lost fraction: the stream stops with the clear error (it used to see 1 bad record in len(got) + 1)
    assert 1 / (len(got) + 1) < 0.25 < lost / len(rows)
    strict = _shard_cfg(bad_dest, s3cfg, max_bad_fraction=0.25, min_records_for_bad_fraction=1)
    with pytest.raises(DataQualityError, match=r"\d+ of \d+ records rejected \(\d+% > max_bad_fraction 25%\)"):
        list(RecordStream(iter(rows), strict))


def test_missing_shard_is_a_reject_per_record_and_the_others_come_through(packed, s3cfg, ray_cluster):
    """A shard the manifest lists but the store does not have (deleted) loses its records, each one a reject naming
    the shard and the store's answer; the other shards' records come through in order, no crash."""
    dest, _ = packed
    manifest = read_manifest(dest, s3cfg)
    gone, kept = manifest["shards"][0], manifest["shards"][1:]
    storage, copy = S3Storage(s3cfg), f"s3://{BUCKET}/one-shard-gone"
    for shard in kept:
        storage.write_bytes(f"{copy}/{shard['name']}", storage.read_bytes(f"{dest}/{shard['name']}"))
    storage.write_bytes(f"{copy}/{MANIFEST}", json.dumps(manifest).encode())
    rows = list(build_dataset(_shard_cfg(copy, s3cfg), FILES).iter_rows())
    bad = [r for r in rows if not r["ok"]]
    lost = sum(gone["files"].get(Path(f).name, 0) for f in FILES)
    assert lost > 1 and len(bad) == lost and rows[:lost] == bad  # the first shard's place in the order
    assert all(r["file"] == gone["name"] and r["reason"].startswith("missing shard: S3 read ") and
               f"{copy}/{gone['name']}" in r["reason"] and "NoSuchKey" in r["reason"] for r in bad)
    assert bad[-1]["reason"].endswith(f"(lost record {lost} of {lost})")
    clean = [r["sample_id"] for r in build_dataset(_shard_cfg(dest, s3cfg), FILES).iter_rows()]
    assert [r["sample_id"] for r in rows[lost:]] == clean[lost:] and all(r["ok"] for r in rows[lost:])


def test_decode_task_reads_with_its_own_process_environment(packed, s3cfg, s3_env, monkeypatch):
    """A decode task reads its shard with the AWS variables of the process it runs in (a Ray worker's own, on a
    joined cluster) when ``data.s3`` leaves them empty; with none, the read fails naming what to set: it is not
    turned into rejects."""
    import pyarrow as pa

    from seedr1.data.pipeline import _decode_shards

    dest, _ = packed
    shard = read_manifest(dest, s3cfg)["shards"][0]
    names = [Path(f).name for f in FILES]
    cfg, batch = _shard_cfg(dest), pa.table({"uri": [f"{dest}/{shard['name']}"]})  # S3Config(): all from the env
    expected = {shard["name"]: shard["records"]}
    rows = [r for t in _decode_shards(batch, names, cfg, 0, expected) for r in t.to_pylist()]
    assert len(rows) == shard["records"] and all(r["ok"] for r in rows)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    with pytest.raises(StorageError, match=r"Unable to locate credentials \(set AWS_ACCESS_KEY_ID"):
        list(_decode_shards(batch, names, cfg, 0, expected))


def test_a_shard_the_store_fails_to_give_fails_the_dataset_naming_it(root, tmp_path, ray_cluster):
    """Not "not there" but a failing read (here: a folder where the shard should be; on S3: unreachable after the
    retries, access denied): the records are not quietly dropped, the dataset fails with the storage error."""
    dest = tmp_path / "shards"
    pack(str(root), str(dest), shard_size=SHARD_SIZE, log=QUIET)
    name = read_manifest(str(dest))["shards"][0]["name"]
    (dest / name).unlink()
    (dest / name).mkdir()
    with pytest.raises(Exception, match=rf"cannot read {dest / name}: Is a directory"):
        list(build_dataset(_shard_cfg(str(dest)), FILES).iter_rows())


def test_files_no_shard_holds_are_a_config_error_naming_them(root, tmp_path):
    dest = tmp_path / "shards"
    pack(str(root), str(dest), shard_size=SHARD_SIZE, log=QUIET)
    with pytest.raises(ConfigError, match=r"data.shards .*: no shard holds validation_L9.jsonl; its manifest lists "
                                          r"training_6k.jsonl, training_with_cot_6k.jsonl, validation_L1.jsonl"):
        build_dataset(_shard_cfg(str(dest)), ["annotations/validation_L9.jsonl"])


def _flip_first_byte(data: bytes, member: str, to: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        at = tar.getmember(member).offset_data
    return data[:at] + to + data[at + 1:]


@pytest.mark.parametrize("to", [b"x", b"\xff"], ids=["bad-json", "bad-utf8"])
def test_corrupt_json_member_is_one_reject_and_the_shard_goes_on(root, tmp_path, to):
    dest = tmp_path / "shards"
    pack(str(root), str(dest), shard_size=SHARD_SIZE, log=QUIET)
    shard = read_manifest(str(dest))["shards"][0]
    path = str(dest / shard["name"])
    data = _flip_first_byte((dest / shard["name"]).read_bytes(), "00000001.json", to)  # tar has no data checksum
    names = [Path(f).name for f in FILES]
    rows = list(_shard_rows(data, path, names, _local_cfg(root), 0))
    assert len(rows) == shard["records"]  # no crash: the other records came through
    assert [r["ok"] for r in rows] == [True, False] + [True] * (len(rows) - 2)
    bad = rows[1]
    assert (bad["file"], bad["line"], bad["sample_id"]) == (shard["name"], None, None)
    assert f"shard {path}: member 00000001.json is not a record" in bad["reason"]


def test_shuffle_orders_records_within_a_shard_per_epoch(root, tmp_path):
    # A small data set packs into one shard: shuffling only the shard order would train every epoch in packed order.
    dest = tmp_path / "shards"
    pack(str(root), str(dest), shard_size=1 << 30, log=QUIET)
    (shard,) = read_manifest(str(dest))["shards"]
    data, path, names, cfg = (dest / shard["name"]).read_bytes(), str(dest / shard["name"]), ["training_6k.jsonl"], \
        _local_cfg(root)

    def order(epoch, shuffle=True):
        return [r["sample_id"] for r in _shard_rows(data, path, names, cfg, epoch, shuffle=shuffle)]

    packed_order = order(0, shuffle=False)
    assert len(packed_order) == COUNTS["training_6k.jsonl"]
    assert sorted(order(0)) == sorted(packed_order) and order(0) != packed_order
    assert order(1) != order(0) and order(1) == order(1)  # per epoch, and the same on a resumed run


def test_pack_stops_at_an_unreadable_media_file_naming_the_record(root, tmp_path):
    """A media path that exists but cannot be read (a folder here, or no permission) stops the pack with the record
    and the file: packing the record without it would bake a 'missing image' into the shards."""
    bad_root = tmp_path / "root"
    shutil.copytree(root, bad_root)
    record = json.loads((bad_root / FILES[3]).read_text().splitlines()[1])  # L2 line 2
    image = bad_root / "images" / record["video_source"] / record["current_observation_basename"]
    image.unlink()
    image.mkdir()
    with pytest.raises(StorageError, match=rf"cannot pack validation_L2.jsonl line 2 \(sample_id "
                                           rf"{record['sample_id']}\): cannot read {image}"):
        pack(str(bad_root), str(tmp_path / "shards"), shard_size=SHARD_SIZE, log=QUIET)


def test_pack_from_a_mistyped_root_packs_nothing_and_keeps_the_manifest(root, tmp_path, capsys):
    from seedr1.cli import main

    dest = tmp_path / "shards"
    pack(str(root), str(dest), shard_size=1 << 30, log=lambda *a: None)
    manifest = (dest / MANIFEST).read_text()
    assert main(["data", "pack", str(tmp_path / "typo"), "--to", str(dest)]) == 2
    assert f"no annotation records under {tmp_path / 'typo'}/annotations" in capsys.readouterr().err
    assert (dest / MANIFEST).read_text() == manifest  # the good pack is still described
    for size in ("0", "-5"):
        with pytest.raises(SystemExit) as e:
            main(["data", "pack", str(root), "--to", str(tmp_path / "other"), "--shard-size", size])
        assert e.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_shard_truncated_inside_a_header_is_not_silent():
    """A cut that falls inside a tar header (tarfile ends there quietly) still reports the shard as broken."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key in ("00000000", "00000001", "00000002"):
            for ext, payload in (("json", b"{}"), ("png", b"x" * 700)):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    data = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        offset = tar.getmember("00000002.json").offset
    assert offset > 0
    for cut in (offset, offset + 100):  # at a member boundary, inside the next header
        members = list(iter_tar_members(data[:cut], "s.tar"))
        # record 1 may be missing members that came after the cut: dropped; the shard error comes last
        assert [m["key"] for m in members] == ["00000000", None]
        assert "s.tar is truncated or corrupt" in members[-1]["error"]
    assert [m["key"] for m in iter_tar_members(data, "s.tar")] == ["00000000", "00000001", "00000002"]


def test_corrupt_media_and_records_in_shards_are_rejects(root, s3cfg, ray_cluster, tmp_path):
    """Packed as they are, then rejected when read: a truncated mp4, a corrupt png, a malformed JSON line and a record
    missing video_source (the last two used to crash `pack`)."""
    bad_root = tmp_path / "root"
    shutil.copytree(root, bad_root)
    l1_lines = (bad_root / FILES[2]).read_text().splitlines()
    l2_lines = (bad_root / FILES[3]).read_text().splitlines()
    l1, l2 = [json.loads(x) for x in l1_lines], [json.loads(x) for x in l2_lines]
    v_line = next(i for i, r in enumerate(l1, start=1) if r["task_progress_metadata"])
    video = bad_root / "videos" / l1[v_line - 1]["video_source"] / l1[v_line - 1]["video_basename"]
    video.write_bytes(video.read_bytes()[:2000])  # truncated mp4
    image = bad_root / "images" / l2[1]["video_source"] / l2[1]["current_observation_basename"]
    image.write_bytes(b"not a png")  # corrupt image (L2 line 2)
    j_line = 8 if v_line != 8 else 7
    l1_lines[j_line - 1] = l1_lines[j_line - 1][:40]  # malformed JSON
    (bad_root / FILES[2]).write_text("\n".join(l1_lines) + "\n")
    l2_lines[2] = json.dumps({k: v for k, v in l2[2].items() if k != "video_source"})  # L2 line 3
    (bad_root / FILES[3]).write_text("\n".join(l2_lines) + "\n")

    dest = f"s3://{BUCKET}/corrupt-media"
    result = pack(str(bad_root), dest, shard_size=SHARD_SIZE, s3=s3cfg, log=QUIET)
    assert result.records == sum(COUNTS.values())
    rejects = tmp_path / "out" / "rejects.jsonl"
    cfg = _shard_cfg(dest, s3cfg, max_bad_fraction=0.5)
    stream = RecordStream(dataset_rows(build_dataset(cfg, FILES[2:4])), cfg, rejects_path=str(rejects))
    records = list(stream)
    assert stream.rejected == 4 and stream.seen == 12
    bad_ids = {l1[v_line - 1]["sample_id"], l1[j_line - 1]["sample_id"], l2[1]["sample_id"], l2[2]["sample_id"]}
    assert [r.sample_id for r in records] == [r["sample_id"] for r in l1 + l2 if r["sample_id"] not in bad_ids]
    written = sorted((json.loads(x) for x in rejects.read_text().splitlines()), key=lambda r: (r["file"], r["line"]))
    expected = sorted([
        ("validation_L1.jsonl", v_line, l1[v_line - 1]["sample_id"], "video_basename"),
        ("validation_L1.jsonl", j_line, None, None),
        ("validation_L2.jsonl", 2, l2[1]["sample_id"], "current_observation_basename"),
        ("validation_L2.jsonl", 3, l2[2]["sample_id"], "video_source")], key=lambda r: (r[0], r[1]))
    assert [(r["file"], r["line"], r["sample_id"], r["field"]) for r in written] == expected
    reasons = {(r["file"], r["line"]): r["reason"] for r in written}
    assert "cannot decode video" in reasons["validation_L1.jsonl", v_line]
    assert l1[v_line - 1]["video_basename"] in reasons["validation_L1.jsonl", v_line]
    assert "malformed JSON" in reasons["validation_L1.jsonl", j_line]
    assert "cannot decode image" in reasons["validation_L2.jsonl", 2]
    assert image.name in reasons["validation_L2.jsonl", 2]
    assert "missing required field" in reasons["validation_L2.jsonl", 3]


# ---- storage errors -----------------------------------------------------------------------------------------------
class _Body:
    def __init__(self, data: bytes, drop: bool):
        self.data, self.drop = data, drop

    def read(self) -> bytes:
        if self.drop:
            raise ResponseStreamingError(error="Connection broken: IncompleteRead(100 bytes read, 900 more expected)")
        return self.data

    def close(self) -> None:
        pass


class _DroppingClient:
    """get_object succeeds; the body's download drops the connection the first ``drops`` times."""

    def __init__(self, drops: int):
        self.drops, self.calls = drops, 0

    def get_object(self, Bucket: str, Key: str) -> dict:
        self.calls += 1
        return {"Body": _Body(b"payload", drop=self.calls <= self.drops)}


def test_s3_body_dropped_mid_download_is_retried(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    storage = S3Storage(S3Config(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s", max_attempts=3))
    storage.client = _DroppingClient(drops=2)
    assert storage.read_bytes("s3://b/k") == b"payload" and storage.client.calls == 3
    storage.client = _DroppingClient(drops=3)
    with pytest.raises(StorageError, match=r"^S3 read s3://b/k failed after 3 attempts: .*Connection broken"):
        storage.read_bytes("s3://b/k")
    assert storage.client.calls == 3


def test_get_storage_builds_one_client_per_resolved_config(s3cfg, monkeypatch):
    """Decode tasks ask for storage per shard (and ``prepare_from_root`` per record): one boto3 client per
    process and configuration, a new one when the endpoint or the credentials differ."""
    first = get_storage(f"s3://{BUCKET}/a", s3cfg)
    assert get_storage(f"s3://{BUCKET}/b", replace(s3cfg)) is first
    assert get_storage(f"s3://{BUCKET}/a", replace(s3cfg, secret_key="other")) is not first
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3cfg.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    from_env = get_storage(f"s3://{BUCKET}/a")
    assert from_env is not first and from_env.options.access_key == "env-key"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated-key")  # the variables are read on every call
    assert get_storage(f"s3://{BUCKET}/a").options.access_key == "rotated-key"
    assert type(get_storage("/some/folder")).__name__ == "LocalStorage"


def test_moto_accepts_any_credentials(packed, s3cfg):
    """The loopback server does not check signatures, so a wrong secret cannot be tested here; record that fact so
    a future server that does check makes this test fail (and a real wrong-credentials test can replace it)."""
    dest, _ = packed
    wrong = replace(s3cfg, secret_key="definitely-wrong")
    assert json.loads(S3Storage(wrong).read_bytes(f"{dest}/{MANIFEST}"))["records"] == sum(COUNTS.values())


def test_missing_bucket_and_key_are_clear_storage_errors(s3cfg, s3_env, root):
    storage = get_storage("s3://no-such-bucket/x")
    with pytest.raises(StorageError, match=r"S3 read s3://no-such-bucket/data/manifest.json failed: NoSuchBucket"):
        storage.read_bytes("s3://no-such-bucket/data/manifest.json")
    with pytest.raises(StorageNotFound, match=rf"s3://{BUCKET}/nothing/here failed: NoSuchKey"):
        storage.read_bytes(f"s3://{BUCKET}/nothing/here")
    with pytest.raises(StorageError) as no_bucket:
        storage.read_bytes("s3://no-such-bucket/data/shard-000000.tar")
    assert not isinstance(no_bucket.value, StorageNotFound)  # a wrong bucket is a configuration error
    with pytest.raises(StorageNotFound, match=rf"cannot read {root}/absent.tar: No such file"):
        get_storage(str(root)).read_bytes(f"{root}/absent.tar")
    with pytest.raises(StorageError, match=r"S3 write s3://no-such-bucket/p/shard-000000.tar failed: NoSuchBucket"):
        pack(str(root), "s3://no-such-bucket/p", shard_size=SHARD_SIZE, log=QUIET)
    with pytest.raises(FileNotFoundError, match=r"no manifest.json under s3://no-such-bucket/p"):
        read_manifest("s3://no-such-bucket/p")


def test_unreachable_endpoint_fails_fast_with_the_endpoint(root, s3_env):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    cfg = S3Config(endpoint_url=endpoint, max_attempts=2, connect_timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"S3 read s3://{BUCKET}/a/b failed: cannot reach endpoint {endpoint}"):
        S3Storage(cfg).read_bytes(f"s3://{BUCKET}/a/b")
    with pytest.raises(StorageError, match=rf"cannot reach endpoint {endpoint} after 2 attempts"):
        pack(str(root), f"s3://{BUCKET}/never", shard_size=SHARD_SIZE, s3=cfg, log=QUIET)
    with pytest.raises(StorageError, match=rf"s3://{BUCKET}/never/manifest.json failed: cannot reach endpoint"):
        build_dataset(_shard_cfg(f"s3://{BUCKET}/never", cfg), FILES)
    assert time.monotonic() - start < 15


def test_temporary_credentials_carry_their_session_token(monkeypatch):
    """STS credentials from the AWS variables need their token on every request; a key given in the config is
    another identity, and the variables' token must not be paired with it."""
    from seedr1.storage import S3Storage, resolve_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-1")
    assert resolve_s3().session_token == "token-1"
    assert S3Storage().client._request_signer._credentials.token == "token-1"  # what signs the requests
    assert resolve_s3(S3Config(access_key="AKIAOTHER", secret_key="s")).session_token == ""
    assert resolve_s3(S3Config(access_key="ASIAX", secret_key="s", session_token="token-2")).session_token == "token-2"
