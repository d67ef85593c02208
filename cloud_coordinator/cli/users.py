"""``users add | list | disable | role | reset | whoami | password | setup``: operator accounts."""

from __future__ import annotations

from pathlib import Path

import click

from silolink.cli_util import echo_json, handle_errors, parse_duration_s, table

from ..accounts.client import AccountsClient, redeem_setup_code
from ..operator_client import OperatorClient
from .options import json_option, operator_options

ROLES = click.Choice(["viewer", "operator", "admin"])


@click.group()
def users() -> None:
    """Operator accounts: viewers read, operators also run work, admins also manage sites and users."""


def _print_setup(result: dict, action: str) -> None:
    click.echo(f"account {result['account']} ({result['role']}) {action}; its setup code is shown once")
    click.echo(f"  setup code:      {result['setup_code']}  (expires {result['expires_at']})")
    click.echo(f"  CA fingerprint:  {result['ca_fingerprint']}")
    click.echo("the account's holder runs, on their own machine:")
    command = (
        f"  cloud-coordinator users setup --coordinator {result['coordinator_address']} "
        f"--code {result['setup_code']} --ca-fingerprint {result['ca_fingerprint']} --output operator.json"
    )
    host, _, port = result["coordinator_address"].rpartition(":")
    if port.isdigit() and result["enroll_address"] != f"{host}:{int(port) + 1}":
        command += f" --enroll-address {result['enroll_address']}"
    click.echo(command)


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=ROLES, help="What the account may do.")
@click.option("--setup-ttl", default="24h", show_default=True, help="How long the setup code stays valid.")
@json_option
@operator_options
@handle_errors
def add(client: OperatorClient, name: str, role: str, setup_ttl: str, as_json: bool) -> None:
    """Create account NAME and print its one-time setup code (admins only)."""
    result = AccountsClient(client).add(name, role, parse_duration_s(setup_ttl))
    if as_json:
        echo_json(result)
    else:
        _print_setup(result, "added")


@users.command("reset")
@click.argument("name")
@click.option("--setup-ttl", default="24h", show_default=True, help="How long the setup code stays valid.")
@json_option
@operator_options
@handle_errors
def reset(client: OperatorClient, name: str, setup_ttl: str, as_json: bool) -> None:
    """Issue a new setup code for NAME; its certificates, password and sessions stop working now."""
    result = AccountsClient(client).reset(name, parse_duration_s(setup_ttl))
    if as_json:
        echo_json(result)
    else:
        _print_setup(result, "reset")


@users.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """Show every account with its role and state (admins only)."""
    found = AccountsClient(client).list()
    if as_json:
        echo_json(found)
        return
    rows = [
        [
            a["name"],
            a["role"],
            "disabled" if a["disabled"] else ("active" if a["set_up"] else "awaiting setup"),
            ("password" + (" + totp" if a["totp"] else "")) if a["console_password"] else "no",
            a["last_login_at"],
            a["created_by"],
        ]
        for a in found
    ]
    click.echo(table(["ACCOUNT", "ROLE", "STATE", "CONSOLE", "LAST LOGIN", "CREATED BY"], rows))


@users.command("disable")
@click.argument("name")
@json_option
@operator_options
@handle_errors
def disable(client: OperatorClient, name: str, as_json: bool) -> None:
    """Disable account NAME: its every call and console session is refused at once."""
    result = AccountsClient(client).disable(name)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"account {result['name']} disabled")


@users.command("role")
@click.argument("name")
@click.argument("role", type=ROLES)
@json_option
@operator_options
@handle_errors
def role(client: OperatorClient, name: str, role: str, as_json: bool) -> None:
    """Give account NAME the role ROLE (viewer, operator or admin); it applies from its next call."""
    result = AccountsClient(client).set_role(name, role)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"account {result['name']} is now {result['role']}")


@users.command("whoami")
@json_option
@operator_options
@handle_errors
def whoami(client: OperatorClient, as_json: bool) -> None:
    """Show the account these credentials belong to and its role."""
    result = AccountsClient(client).whoami()
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{result['name']} ({result['role']})")


def _read_password(password_file: Path | None, confirm: bool = True) -> str:
    if password_file is not None:
        return password_file.read_text().rstrip("\n")
    return click.prompt("console password", hide_input=True, confirmation_prompt=confirm)


password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the console password from this file instead of prompting.",
)
totp_option = click.option(
    "--totp", is_flag=True, help="Also require a TOTP code at console login (prints a URI for your authenticator app)."
)


@users.command("password")
@password_file_option
@totp_option
@json_option
@operator_options
@handle_errors
def password(client: OperatorClient, password_file: Path | None, totp: bool, as_json: bool) -> None:
    """Set your own console password (and optionally TOTP); open console sessions end."""
    result = AccountsClient(client).set_password(_read_password(password_file), totp)
    if as_json:
        echo_json(result)
        return
    click.echo("console password set")
    if result["totp_uri"]:
        click.echo(f"add this to your authenticator app (shown once): {result['totp_uri']}")


@users.command("setup")
@click.option("--coordinator", required=True, metavar="HOST:PORT", help="The coordinator's mTLS address.")
@click.option("--code", required=True, help="The one-time setup code from `users add`.")
@click.option("--ca-fingerprint", required=True, help="The coordinator CA's fingerprint, as printed with the code.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Credentials file.")
@click.option("--enroll-address", metavar="HOST:PORT", help="The enrollment listener (default: the port after it).")
@click.option("--no-password", is_flag=True, help="Set no console password now (`users password` sets one later).")
@password_file_option
@totp_option
@json_option
@handle_errors
def setup(
    coordinator: str,
    code: str,
    ca_fingerprint: str,
    output: Path,
    enroll_address: str | None,
    no_password: bool,
    password_file: Path | None,
    totp: bool,
    as_json: bool,
) -> None:
    """Redeem a setup code: make your key here, get your certificate, set your console password."""
    secret = "" if no_password else _read_password(password_file)
    result = redeem_setup_code(output, coordinator, code, ca_fingerprint, enroll_address, secret, totp)
    if as_json:
        echo_json(result)
        return
    click.echo(f"account {result['name']} ({result['role']}) set up; credentials in {result['credentials_file']}")
    click.echo(f"  use them with any command: --credentials {result['credentials_file']}")
    if result["totp_uri"]:
        click.echo(f"add this to your authenticator app (shown once): {result['totp_uri']}")
