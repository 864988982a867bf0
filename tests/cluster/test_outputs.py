"""Relative output folders never land in Ray's unpacked working directory (``seedr1.cluster.outputs``)."""
from pathlib import Path

from seedr1.cluster.outputs import in_ray_working_dir, output_path

RAY_PKG = "tmp/ray/session_2026-12-07_10-00-00_1_1/runtime_resources/working_dir_files/_ray_pkg_0123abcd"


def test_inside_a_ray_working_dir_relative_outputs_go_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SEEDR1_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pkg = tmp_path / RAY_PKG
    pkg.mkdir(parents=True)
    assert in_ray_working_dir(pkg) and not in_ray_working_dir(tmp_path)
    assert output_path("runs/grpo-tiny", cwd=pkg) == str(tmp_path / "home" / "seedr1" / "runs" / "grpo-tiny")


def test_seedr1_home_wins_and_plain_folders_resolve_as_usual(tmp_path, monkeypatch):
    monkeypatch.delenv("SEEDR1_HOME", raising=False)
    assert output_path("runs/x", cwd=tmp_path) == str(tmp_path / "runs" / "x")
    monkeypatch.setenv("SEEDR1_HOME", str(tmp_path / "keep"))
    assert output_path("runs/x", cwd=tmp_path / RAY_PKG) == str(tmp_path / "keep" / "runs" / "x")
    assert output_path("runs/x", cwd=tmp_path) == str(tmp_path / "keep" / "runs" / "x")


def test_absolute_s3_and_empty_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEDR1_HOME", str(tmp_path))
    assert output_path("/data/runs/a") == "/data/runs/a"
    assert output_path("s3://bucket/runs/a") == "s3://bucket/runs/a"
    assert output_path("") == ""
    assert output_path("~/runs/a") == str(Path.home() / "runs" / "a")


def test_relative_inputs_are_found_where_earlier_jobs_put_them(tmp_path, monkeypatch):
    from seedr1.cluster.outputs import input_path

    monkeypatch.setenv("SEEDR1_HOME", str(tmp_path / "home"))
    pkg = tmp_path / RAY_PKG
    (pkg / "configs").mkdir(parents=True)
    (tmp_path / "home" / "runs" / "grpo-tiny" / "data").mkdir(parents=True)
    assert input_path("configs", cwd=pkg) == str(pkg / "configs")  # in the working dir: there
    assert input_path("runs/grpo-tiny/data", cwd=pkg) == str(tmp_path / "home" / "runs" / "grpo-tiny" / "data")
    for as_given in ("tiny", "Qwen/Qwen2-VL-7B-Instruct", "s3://b/m", "/abs/m", "runs/missing"):
        assert input_path(as_given, cwd=pkg) == as_given
