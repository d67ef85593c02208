"""Flower App Bundles: built with Flower's own builder, read back with every check an
untrusted bundle needs (no sockets; real zip files, real Flower validation)."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from silolink import errors
from silolink.apps.fab import FabLimits, build_fab, component_file, inspect_fab, unpack_fab
from tests.flower_app_builders import EXAMPLES, fab_of, rezip, symlink_entry, with_listed, write_app


def test_the_numpy_example_builds_as_flwr_build_does_and_declares_its_settings():
    from flwr.cli.build import build_fab_from_disk

    data = build_fab(EXAMPLES / "numpy-app")
    assert data == build_fab_from_disk(EXAMPLES / "numpy-app")  # byte for byte: the hash is the identity
    info = inspect_fab(data)
    assert (info.name, info.version, info.publisher, info.fab_id) == (
        "numpy-app",
        "1.0.0",
        "silolink",
        "silolink/numpy-app",
    )
    assert info.clientapp == "numpy_app.client_app:app" and info.serverapp == "numpy_app.server_app:app"
    assert info.config["num-server-rounds"] == 3 and info.config["learning-rate"] == 0.1
    assert "numpy>=1.26" in info.dependencies
    assert {f.path for f in info.files} >= {"pyproject.toml", "numpy_app/client_app.py", "numpy_app/task.py"}
    assert component_file(info, "clientapp") == "numpy_app/client_app.py"
    assert len(info.sha256) == 64 and info.size == len(data)


def test_nested_config_is_flattened_as_flower_does(tmp_path):
    info = inspect_fab(fab_of(write_app(tmp_path, config={"model": {"lr": 0.5, "layers": 2}, "seed": 1})))
    assert info.config == {"model.lr": 0.5, "model.layers": 2, "seed": 1}


def test_unpack_writes_the_files_and_nothing_else(tmp_path):
    data = fab_of(write_app(tmp_path))
    info = unpack_fab(data, tmp_path / "out")
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == sorted(f.path for f in info.files)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left
    with pytest.raises(errors.AlreadyExists):
        unpack_fab(data, tmp_path / "out")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (("../escape.py", b"x"), "outside its root"),
        (("probe_app/../../escape.py", b"x"), "outside its root"),
        (("/etc/cron.d/evil", b"x"), "absolute path"),
        (("C:/evil.py", b"x"), "absolute path"),
        (("probe_app\\evil.py", b"x"), "backslash"),
    ],
)
def test_paths_outside_the_root_are_refused_before_anything_is_written(tmp_path, entry, problem):
    bad = with_listed(fab_of(write_app(tmp_path)), *entry)
    with pytest.raises(errors.InvalidArgument, match=problem):
        unpack_fab(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.py").exists()


def test_symlinks_are_refused_in_bundles_and_in_directories(tmp_path):
    bad = rezip(fab_of(write_app(tmp_path)), entries=[symlink_entry("probe_app/data.py", "/etc/passwd")])
    with pytest.raises(errors.InvalidArgument, match=r"symlink \(probe_app/data.py\)"):
        inspect_fab(bad)
    directory = write_app(tmp_path / "linked")
    os.symlink("/etc/hostname", directory / "probe_app" / "host.py")
    with pytest.raises(errors.InvalidArgument, match=r"symlinks \(probe_app/host.py\)"):
        build_fab(directory)
    (directory / ".gitignore").write_text("probe_app/host.py\n")  # ignored files are not part of the app
    assert inspect_fab(build_fab(directory)).name == "probe-app"


def test_tampered_unlisted_and_duplicate_files_are_refused(tmp_path):
    data = fab_of(write_app(tmp_path))
    tampered = rezip(data, change=lambda n, c: c + b"\nimport os" if n.endswith("client_app.py") else c)
    with pytest.raises(errors.InvalidArgument, match="probe_app/client_app.py does not match"):
        inspect_fab(tampered)
    with pytest.raises(errors.InvalidArgument, match="does not list"):
        inspect_fab(rezip(data, add={"probe_app/extra.py": b"print(1)"}))
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns as it writes one
        duplicate = rezip(data, add={"probe_app/marker.py": b"VALUE = 'two'"})
    with pytest.raises(errors.InvalidArgument, match="twice"):
        inspect_fab(duplicate)


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        (FabLimits(max_bundle_bytes=1000), "over the limit of 1,000 bytes"),
        (FabLimits(max_files=3), "more than 3 files"),
        (FabLimits(max_unpacked_bytes=500), "unpacks to more than 500 bytes"),
    ],
)
def test_size_limits(tmp_path, limits, problem):
    with pytest.raises(errors.ResourceExhausted, match=problem):
        inspect_fab(fab_of(write_app(tmp_path)), limits)


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path):
    bomb = with_listed(fab_of(write_app(tmp_path)), "probe_app/zeros.json", b"0" * (20 * 1024 * 1024))
    assert len(bomb) < 100_000  # small on the wire
    with pytest.raises(errors.ResourceExhausted, match="unpacks to more than"):
        inspect_fab(bomb, FabLimits(max_bundle_bytes=10 * 1024 * 1024, max_unpacked_bytes=8 * 1024 * 1024))


def test_things_that_are_not_flower_apps(tmp_path):
    with pytest.raises(errors.InvalidArgument, match="not a zip"):
        inspect_fab(b"PK but not really")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("README.md", "hello")
    with pytest.raises(errors.InvalidArgument, match="no pyproject.toml"):
        inspect_fab(empty.getvalue())
    directory = write_app(tmp_path)
    text = (directory / "pyproject.toml").read_text().replace('publisher = "tests"', "")
    (directory / "pyproject.toml").write_text(text)
    with pytest.raises(errors.InvalidArgument, match="publisher"):
        build_fab(directory)
    with pytest.raises(errors.InvalidArgument, match="no pyproject.toml"):
        build_fab(tmp_path)
    with pytest.raises(errors.InvalidArgument, match="not a directory"):
        build_fab(tmp_path / "missing")
