"""Installing apps at a site (the approval): checks first, then all of it or nothing
(real bundles, a real agent.db; no sockets)."""

from __future__ import annotations

import shutil

import pytest

from edge_agent.apps.install import install_bundle, read_source
from edge_agent.apps.store import AppStore
from silolink import errors
from silolink.apps.fab import FabLimits
from tests.flower_app_builders import fab_of, write_app

LIMITS = FabLimits()


@pytest.fixture
def store(tmp_path):
    return AppStore.open(tmp_path / "site" / "agent.db", tmp_path / "site" / "apps")


def everything_in(store: AppStore) -> tuple[list, list]:
    files = (
        sorted(p.relative_to(store.apps_dir).as_posix() for p in store.apps_dir.rglob("*"))
        if store.apps_dir.exists()
        else []
    )
    return [a.ref for a in store.list()], files


def test_install_from_a_directory_and_then_its_fab_is_the_same_approval(store, tmp_path):
    directory = write_app(tmp_path)
    app, new = install_bundle(store, read_source(directory, LIMITS), "local", LIMITS)
    assert new and app.ref == "probe-app:1.0.0" and app.publisher == "tests" and app.source == "local"
    assert app.path == store.apps_dir / "probe-app" / "1.0.0" / app.sha256 and app.present
    assert (app.path / "probe_app" / "client_app.py").is_file()
    assert app.config == {"learning-rate": 0.1, "local-epochs": 2, "mode": "fast"}
    fab = tmp_path / "probe.fab"
    fab.write_bytes(fab_of(directory))
    again, new = install_bundle(store, read_source(fab, LIMITS), "local", LIMITS)
    assert not new and again.sha256 == app.sha256
    assert store.list()[0].to_dict()["state"] == "installed"


def test_other_content_under_an_installed_version_is_refused(store, tmp_path):
    first, _ = install_bundle(store, fab_of(write_app(tmp_path / "a", marker="one")), "local", LIMITS)
    with pytest.raises(errors.AlreadyExists, match=r"probe-app:1.0.0 is already installed here with other content"):
        install_bundle(store, fab_of(write_app(tmp_path / "b", marker="two")), "local", LIMITS)
    assert everything_in(store)[0] == ["probe-app:1.0.0"] and store.get("probe-app", "1.0.0").sha256 == first.sha256
    second, new = install_bundle(
        store, fab_of(write_app(tmp_path / "c", version="2.0.0", marker="two")), "local", LIMITS
    )
    assert new and [a.ref for a in store.find("probe-app")] == ["probe-app:1.0.0", "probe-app:2.0.0"]


def test_missing_dependencies_are_named_and_nothing_is_installed(store, tmp_path):
    directory = write_app(tmp_path, dependencies=["numpy>=1.26", "numpy>=999", "surely-not-a-package-here>=1",
                                                  "pywin32>=300; sys_platform == 'win32'"])  # fmt: skip
    with pytest.raises(errors.FailedPrecondition) as caught:
        install_bundle(store, fab_of(directory), "local", LIMITS)
    message = caught.value.message
    assert "numpy>=999 (numpy " in message and "is installed)" in message
    assert "surely-not-a-package-here>=1 (not installed)" in message
    assert "pywin32" not in message and "installs nothing itself" in message
    assert everything_in(store) == ([], [])


def test_a_bundle_whose_clientapp_module_is_missing_is_refused(store, tmp_path):
    directory = write_app(tmp_path)
    (directory / "probe_app" / "client_app.py").unlink()
    with pytest.raises(errors.InvalidArgument, match="names a module the bundle does not hold"):
        install_bundle(store, fab_of(directory), "local", LIMITS)
    assert everything_in(store) == ([], [])


def test_read_source_refuses_what_is_too_big_or_missing(tmp_path):
    big = tmp_path / "big.fab"
    big.write_bytes(b"0" * 2048)
    with pytest.raises(errors.ResourceExhausted, match="max_bundle_bytes"):
        read_source(big, FabLimits(max_bundle_bytes=1024))
    with pytest.raises(errors.NotFound, match="neither a Flower app directory nor a .fab"):
        read_source(tmp_path / "nothing.fab", LIMITS)


def test_remove_withdraws_the_approval_and_the_files(store, tmp_path):
    app, _ = install_bundle(store, fab_of(write_app(tmp_path)), "local", LIMITS)
    shutil.rmtree(app.path / "probe_app")
    (app.path / "pyproject.toml").unlink()
    assert store.list()[0].to_dict()["state"] == "approved"  # approved, but its files are gone
    assert store.remove("probe-app", "1.0.0").ref == "probe-app:1.0.0"
    assert everything_in(store) == ([], [])
    with pytest.raises(errors.NotFound, match="not installed at this site"):
        store.remove("probe-app", "1.0.0")


def test_a_bundle_must_declare_the_name_and_version_its_signed_manifest_names(store, tmp_path):
    data = fab_of(write_app(tmp_path))
    with pytest.raises(errors.PermissionDenied, match="declares probe-app:1.0.0 but its signed manifest names x:9"):
        install_bundle(store, data, "coordinator", LIMITS, expect=("x", "9"))
    assert everything_in(store) == ([], [])
    assert install_bundle(store, data, "coordinator", LIMITS, expect=("probe-app", "1.0.0"))[0].source == "coordinator"


def fake_distribution(root, name: str, body: str) -> None:
    """An installed distribution ``name`` (metadata and one module) in ``root``."""
    module = name.replace("-", "_")
    info = root / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (root / f"{module}.py").write_text(body)


def test_dependencies_that_are_installed_but_do_not_import_are_named_and_nothing_is_installed(
    store, tmp_path, monkeypatch
):
    from edge_agent.apps import deps

    site_packages = tmp_path / "site-packages"
    fake_distribution(site_packages, "broken-dep", "raise ImportError('libfoo.so.1: cannot open shared object file')\n")
    fake_distribution(site_packages, "fine-dep", "VALUE = 1\n")
    fake_distribution(site_packages, "slow-dep", "import time\ntime.sleep(60)\n")
    monkeypatch.syspath_prepend(str(site_packages))  # the metadata, here
    monkeypatch.setenv("PYTHONPATH", str(site_packages))  # and the modules, in the checking process
    monkeypatch.setattr(deps, "_imported", set())
    # The app's own modules are not on the path: a module of the bundle never runs to be checked.
    directory = write_app(tmp_path / "app", dependencies=["numpy>=1.26", "broken-dep>=1", "fine-dep"])
    with pytest.raises(errors.FailedPrecondition) as caught:
        install_bundle(store, fab_of(directory), "local", LIMITS)
    assert caught.value.message == (
        "app probe-app:1.0.0 needs packages that are installed but do not import in this site's environment: "
        "broken_dep (broken-dep 1.0): ImportError: libfoo.so.1: cannot open shared object file. Repair them in the "
        "agent's environment (the agent installs nothing itself), then try again"
    )
    assert everything_in(store) == ([], [])
    assert ("fine-dep", "1.0") in deps._imported and ("broken-dep", "1.0") not in deps._imported

    assert deps.import_failures(["slow-dep"], timeout_s=2) == ["importing slow_dep did not finish within 2 s"]
    (site_packages / "broken_dep.py").write_text("")  # the admin repairs it: the approval goes through
    app, new = install_bundle(store, fab_of(directory), "local", LIMITS)
    assert new and app.ref == "probe-app:1.0.0"
