"""`edge-agent apps` as a site admin uses it: install a directory and a .fab, list, remove,
and one clear error line for a bundle that must not be installed."""

import json
import zipfile

from tests.e2e.test_cli import cli
from tests.flower_app_builders import EXAMPLES, fab_of, rezip, symlink_entry, write_app


def test_install_list_remove_and_clear_errors(tmp_path):
    d = ["--data-dir", str(tmp_path / "site")]
    installed = json.loads(cli("edge-agent", "apps", "install", str(EXAMPLES / "numpy-app"), *d, "--json").stdout)
    assert installed["name"] == "numpy-app" and installed["new"] and installed["state"] == "installed"
    assert installed["publisher"] == "silolink" and "numpy>=1.26" in installed["dependencies"]
    fab = tmp_path / "numpy-app.fab"
    fab.write_bytes(fab_of(EXAMPLES / "numpy-app"))
    again = cli("edge-agent", "apps", "install", str(fab), *d).stdout
    assert again.startswith(f"already installed numpy-app:1.0.0 (sha256 {installed['sha256'][:12]}")

    probe = tmp_path / "probe.fab"
    probe.write_bytes(fab_of(write_app(tmp_path)))
    assert "installed probe-app:1.0.0" in cli("edge-agent", "apps", "install", str(probe), *d).stdout
    listed = json.loads(cli("edge-agent", "apps", "list", *d, "--json").stdout)
    assert [(a["name"], a["state"]) for a in listed] == [("numpy-app", "installed"), ("probe-app", "installed")]
    table = cli("edge-agent", "apps", "list", *d).stdout
    assert "numpy-app" in table and installed["sha256"][:12] in table and "SHA256" in table

    evil = tmp_path / "evil.fab"
    evil.write_bytes(rezip(probe.read_bytes(), entries=[symlink_entry("probe_app/x.py", "/etc/shadow")]))
    failed = cli("edge-agent", "apps", "install", str(evil), *d, check=False)
    assert failed.returncode == 2
    assert failed.stderr == "error: the app bundle holds a symlink (probe_app/x.py); bundles take regular files only\n"
    junk = tmp_path / "junk.fab"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("hello.txt", "hi")
    failed = cli("edge-agent", "apps", "install", str(junk), *d, check=False)
    assert failed.returncode == 2 and "no pyproject.toml" in failed.stderr

    removed = json.loads(cli("edge-agent", "apps", "remove", "probe-app:1.0.0", *d, "--json").stdout)
    assert removed["removed"] == "probe-app:1.0.0"
    failed = cli("edge-agent", "apps", "remove", "probe-app:1.0.0", *d, check=False)
    assert failed.returncode == 3 and "not installed at this site" in failed.stderr
    failed = cli("edge-agent", "apps", "remove", "probe-app", *d, check=False)
    assert failed.returncode == 2 and "NAME:VERSION" in failed.stderr
    assert [a["name"] for a in json.loads(cli("edge-agent", "apps", "list", *d, "--json").stdout)] == ["numpy-app"]
