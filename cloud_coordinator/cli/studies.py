"""``studies create | invite | list | show | role``: collaborations across sites."""

from __future__ import annotations

import click

from silolink.cli_util import echo_json, handle_errors, table

from ..operator_client import OperatorClient
from ..studies.client import QueueClient, StudiesClient
from .options import json_option, operator_options

SITES_HELP = (
    "Sites to invite: a name (or site=NAME), kind=hospital, a tag such as region=north; terms joined by commas "
    "must all match. Repeat to add more; each must match an enrolled site."
)


@click.group()
def studies() -> None:
    """Studies scope every job, query, agreement and rollout; sites take part only in studies they accept."""


def _show(study: dict, as_json: bool) -> None:
    if as_json:
        echo_json(study)
        return
    click.echo(f"study {study['name']}" + (f": {study['description']}" if study["description"] else ""))
    click.echo(f"  weight {study['weight']:g}, created by {study['created_by'] or 'the coordinator'}")
    if study["members"]:
        click.echo("  roles: " + ", ".join(f"{a} {r}" for a, r in sorted(study["members"].items())))
    rows = []
    for s in study["sites"]:
        share = s["share"] or {}
        gives = (
            f"{share.get('max_jobs', 0)} job(s), {share.get('cpu', 0):g} CPU, {share.get('gpus', 0)} GPU"
            + (f", {' '.join(share['windows'])}" if share.get("windows") else "")
            if s["share"]
            else ""
        )
        budgets = "; ".join(
            f"{b['dataset']} eps {b['epsilon_spent']:.3g}/{b['epsilon_budget']:.3g}" for b in s["budgets"]
        )
        rows.append([s["site"], s["state"], gives, budgets])
    if rows:
        click.echo(table(["SITE", "STATE", "GIVES", "PRIVACY SPENT (shared)"], rows))
    else:
        click.echo("  no sites yet: cloud-coordinator studies invite " + study["name"] + " --sites SELECTOR")


@studies.command()
@click.argument("name")
@click.option("--description", default="", help="What the study is for.")
@click.option("--weight", type=float, default=0.0, help="Its weight in fair sharing of sites' compute (1 = equal).")
@json_option
@operator_options
@handle_errors
def create(client: OperatorClient, name: str, description: str, weight: float, as_json: bool) -> None:
    """Create study NAME; you become its lead."""
    study = StudiesClient(client).create(name, description, weight)
    if as_json:
        echo_json(study)
        return
    click.echo(f"created study {study['name']}; invite sites with: cloud-coordinator studies invite {name} --sites ...")


@studies.command()
@click.argument("name")
@click.option("--sites", "sites", multiple=True, required=True, metavar="SELECTOR", help=SITES_HELP)
@json_option
@operator_options
@handle_errors
def invite(client: OperatorClient, name: str, sites: tuple[str, ...], as_json: bool) -> None:
    """Invite sites to study NAME; each site accepts it (edge-agent studies accept) or not."""
    study = StudiesClient(client).invite(name, sites)
    if as_json:
        echo_json(study)
        return
    invited = study["invited"]
    click.echo(f"invited {', '.join(invited)} to {name}" if invited else f"those sites were already invited to {name}")


@studies.command("list")
@json_option
@operator_options
@handle_errors
def list_(client: OperatorClient, as_json: bool) -> None:
    """List the studies you may see, with how many sites accepted each."""
    found = StudiesClient(client).list()
    if as_json:
        echo_json(found)
        return
    rows = [
        [s["name"], sum(x["state"] == "accepted" for x in s["sites"]), sum(x["state"] == "invited" for x in s["sites"]),
         f"{s['weight']:g}", s["description"]]
        for s in found
    ]  # fmt: skip
    click.echo(table(["STUDY", "ACCEPTED", "INVITED", "WEIGHT", "DESCRIPTION"], rows))


@studies.command()
@click.argument("name")
@json_option
@operator_options
@handle_errors
def show(client: OperatorClient, name: str, as_json: bool) -> None:
    """Show study NAME: its sites, what each gives, shared privacy budgets, roles."""
    _show(StudiesClient(client).get(name), as_json)


@studies.command()
@click.argument("name")
@click.argument("account")
@click.argument("role", type=click.Choice(["observer", "analyst", "lead", "none"]))
@json_option
@operator_options
@handle_errors
def role(client: OperatorClient, name: str, account: str, role: str, as_json: bool) -> None:
    """Give ACCOUNT a ROLE in study NAME (observer sees, analyst runs work, lead invites); none takes it away."""
    study = StudiesClient(client).set_role(name, account, None if role == "none" else role)
    if as_json:
        echo_json(study)
        return
    click.echo(f"{account} is now {role} in {name}" if role != "none" else f"{account} has no role in {name} now")


@click.command()
@json_option
@operator_options
@handle_errors
def queue(client: OperatorClient, as_json: bool) -> None:
    """Show the work queue: each waiting job's place and why it waits, what runs where, fair shares."""
    found = QueueClient(client).list()
    if as_json:
        echo_json(found)
        return
    waiting = [w for w in found["work"] if w["state"] == "queued"]
    running = [w for w in found["work"] if w["state"] == "running"]
    if not waiting and not running:
        click.echo("the queue is empty")
    for w in waiting:
        click.echo(f"{w['position']:>3}. {w['job']} ({w['study']}): {w['reason']}")
    if running:
        click.echo(
            table(["RUNNING", "STUDY", "SITES"], [[w["job"], w["study"], ", ".join(w["sites"])] for w in running])
        )
    if found["shares"]:
        shares = ", ".join(f"{s} {v['dominant_share']:.1%}" for s, v in sorted(found["shares"].items()))
        click.echo(f"fair share (dominant share of reserved resources / weight): {shares}")
