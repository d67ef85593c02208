"""The demo's step for operator accounts and the web console."""

from __future__ import annotations

import re
import ssl
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import click

from cloud_coordinator.accounts.client import AccountsClient, redeem_setup_code

from ..world import DemoWorld, say

PASSWORD = "demo console password"


def open_the_console(world: DemoWorld) -> None:
    """Give an operator an account of her own and log her in to the web console."""
    operator = world.operator()
    say("cloud-coordinator users add dana --role operator")
    added = AccountsClient(operator).add("dana", "operator")
    click.echo(f"  setup code {added['setup_code'][:10]}... (shown once, valid until {added['expires_at']})")
    creds = world.root / "dana" / "operator.json"
    say(f"cloud-coordinator users setup --code slu_... --ca-fingerprint ... --output {creds}   # on dana's machine")
    done = redeem_setup_code(
        creds,
        added["coordinator_address"],
        added["setup_code"],
        added["ca_fingerprint"],
        added["enroll_address"],
        password=PASSWORD,
    )
    click.echo(f"  dana's key was made on her machine; certificate valid until {done['certificate_expires_at']}")
    address = world.endpoints().get("console_address")
    if not address:
        click.echo("  (the console needs the [console] extra: pip install 'silolink[console]')")
        return
    url = f"https://localhost:{address.rsplit(':', 1)[1]}"
    click.echo(f"  console: {url}/  (log in as dana; the browser must trust {world.coordinator_dir}/pki/ca.pem)")
    sites_online = _log_in_and_count_sites(url, world.coordinator_dir / "pki" / "ca.pem")
    click.echo(f"  logged in over HTTPS as dana (operator): the overview shows {sites_online} sites online")


def _log_in_and_count_sites(url: str, ca_file) -> str:
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), urllib.request.HTTPCookieProcessor(CookieJar())
    )
    page = opener.open(f"{url}/login", timeout=15).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": token, "name": "dana", "password": PASSWORD, "totp": ""}).encode()
    overview = opener.open(f"{url}/login", data=form, timeout=15).read().decode()
    found = re.search(r'id="sites-online">(\d+)<', overview)
    return found.group(1) if found else "?"
