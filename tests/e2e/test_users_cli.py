"""``cloud-coordinator users``: an admin adds an account, its holder sets up on their own
machine with the printed code, and the roles hold from the command line."""

import json

from tests.e2e.test_cli import cli, served  # noqa: F401 - the served coordinator fixture


def test_add_setup_and_use_an_account(served, tmp_path):  # noqa: F811
    data, _ = served
    added = json.loads(
        cli("cloud-coordinator", "users", "add", "olga", "--role", "viewer", "--data-dir", str(data), "--json").stdout
    )
    assert added["setup_code"].startswith("slu_") and added["role"] == "viewer"
    (tmp_path / "pw").write_text("a long console password\n")
    creds = tmp_path / "olga" / "operator.json"
    set_up = json.loads(
        cli(
            "cloud-coordinator", "users", "setup",
            "--coordinator", added["coordinator_address"],
            "--enroll-address", added["enroll_address"],
            "--code", added["setup_code"],
            "--ca-fingerprint", added["ca_fingerprint"],
            "--output", str(creds),
            "--password-file", str(tmp_path / "pw"),
            "--json",
        ).stdout
    )  # fmt: skip
    assert set_up["name"] == "olga" and set_up["console_password"] and (creds.stat().st_mode & 0o077) == 0
    as_olga = ["--credentials", str(creds), "--coordinator", added["coordinator_address"]]
    me = json.loads(cli("cloud-coordinator", "users", "whoami", *as_olga, "--json").stdout)
    assert (me["name"], me["role"]) == ("olga", "viewer")
    cli("cloud-coordinator", "sites", "list", *as_olga)
    refused = cli("cloud-coordinator", "sites", "add", "x-ray", "--kind", "hospital", *as_olga, check=False)
    assert refused.returncode != 0 and "olga has the viewer role; AddSite needs the admin role" in refused.stderr

    cli("cloud-coordinator", "users", "role", "olga", "admin", "--data-dir", str(data))
    cli("cloud-coordinator", "sites", "add", "x-ray", "--kind", "hospital", *as_olga)
    listed = cli("cloud-coordinator", "users", "list", *as_olga).stdout
    assert "olga" in listed and "admin" in listed and "password" in listed
    cli("cloud-coordinator", "users", "disable", "admin", *as_olga)
    refused = cli("cloud-coordinator", "users", "list", "--data-dir", str(data), check=False)
    assert "account admin is disabled" in refused.stderr
