"""`edge-agent apps` as a site admin uses it: install a directory and a .fab, list, remove,
and one clear error line for a bundle that must not be installed."""

import json

from tests.e2e.test_cli import cli
from tests.flower_app_builders import EXAMPLES, fab_of, rezip, symlink_entry, write_app


def test_install_list_remove_and_clear_errors(tmp_path):
    d = ["--data-dir", str(tmp_path / "site")]
    installed = json.loads(cli("edge-agent", "apps", "install", str(EXAMPLES / "numpy-app"), *d, "--json").stdout)
    assert installed["name"] == "numpy-app" and installed["new"] and installed["state"] == "installed"
    assert installed["publisher"] == "silolink" and "numpy>=1.26" in installed["dependencies"]

    probe = tmp_path / "probe.fab"
    probe.write_bytes(fab_of(write_app(tmp_path)))
    assert "installed probe-app:1.0.0" in cli("edge-agent", "apps", "install", str(probe), *d).stdout
    table = cli("edge-agent", "apps", "list", "--local", *d).stdout
    assert "numpy-app" in table and "probe-app" in table and installed["sha256"][:12] in table and "STATE" in table

    evil = tmp_path / "evil.fab"
    evil.write_bytes(rezip(probe.read_bytes(), entries=[symlink_entry("probe_app/x.py", "/etc/shadow")]))
    failed = cli("edge-agent", "apps", "install", str(evil), *d, check=False)
    assert failed.returncode == 2
    assert failed.stderr == "error: the app bundle holds a symlink (probe_app/x.py); bundles take regular files only\n"

    removed = json.loads(cli("edge-agent", "apps", "remove", "probe-app:1.0.0", *d, "--json").stdout)
    assert removed["removed"] == "probe-app:1.0.0"
    failed = cli("edge-agent", "apps", "remove", "probe-app:1.0.0", *d, check=False)
    assert failed.returncode == 3 and "not installed at this site" in failed.stderr
    listed = json.loads(cli("edge-agent", "apps", "list", "--local", *d, "--json").stdout)
    assert [(a["name"], a["state"]) for a in listed] == [("numpy-app", "installed")]
