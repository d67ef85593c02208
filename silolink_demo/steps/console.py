"""The demo's step for operator accounts and the web console."""

from __future__ import annotations

import json
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
    opener = _log_in(url, world.coordinator_dir / "pki" / "ca.pem")
    overview = opener.open(f"{url}/", timeout=15).read().decode()
    found = re.search(r'id="sites-online">(\d+)<', overview)
    click.echo(f"  logged in over HTTPS as dana (operator): the overview shows {found.group(1) if found else '?'} "
               "sites online")  # fmt: skip
    # The Analytics page: the queries asked earlier, with their totals and the sites that refused.
    analytics = opener.open(f"{url}/analytics", timeout=15).read().decode()
    outcomes = re.findall(r'data-outcome="(\w+)"', analytics)
    refused = re.search(r'class="refused">refused by ([^:<]+):', analytics)
    click.echo(
        f"  /analytics: {len(outcomes)} queries kept by the coordinator, {outcomes.count('answered')} answered "
        f"with their totals, {outcomes.count('refused')} refused" + (f" (by {refused.group(1)})" if refused else "")
    )
    # The start form offers every app in the registry, with the run_config keys it declares.
    form = opener.open(f"{url}/training/new", timeout=15).read().decode()
    apps = re.findall(r'<optgroup label="([^"]+)"', form)
    about = re.search(r'id="app-about">([^:<]+:[^:<\s]+)', form)
    keys = re.findall(r'<label data-key="([^"]+)"', form)
    click.echo(f"  /training/new: the start form offers {len(apps)} apps ({', '.join(apps)}); "
               f"{about.group(1) if about else '?'} declares {len(keys)} run_config keys")  # fmt: skip
    # The site page's chart reads the coordinator's history of the site's resource reports.
    series = json.loads(opener.open(f"{url}/sites/hospital-a/resources.json", timeout=15).read())
    click.echo(
        f"  /sites/hospital-a: load and memory over time, {len(series['times'])} points from the coordinator's "
        f"history (memory used now {series['memory_percent'][-1]:.0f}%)"
    )


def _log_in(url: str, ca_file) -> urllib.request.OpenerDirector:
    """A cookie-keeping HTTPS client logged in to the console as dana."""
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), urllib.request.HTTPCookieProcessor(CookieJar())
    )
    page = opener.open(f"{url}/login", timeout=15).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": token, "name": "dana", "password": PASSWORD, "totp": ""}).encode()
    opener.open(f"{url}/login", data=form, timeout=15).read()
    return opener
