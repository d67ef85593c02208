"""The demo's steps: set up the federation: the coordinator, enrolled sites and their running agents."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cloud_coordinator import bootstrap
from cloud_coordinator.cli.sites import enroll_command
from edge_agent import enroll as enroll_mod
from silolink.cli_util import table

from ..world import DemoWorld, indent, say

SITES = [
    ("hospital-a", "hospital", {"region": "north"}),
    ("hospital-b", "hospital", {"region": "south"}),
    ("factory-a", "factory", {"line": "press-4"}),
]


def console_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("starlette", "jinja2", "uvicorn"))


def start_coordinator(world: DemoWorld) -> None:
    """Set up and start the cloud coordinator (its own CA, mTLS on loopback)."""
    data_dir = world.coordinator_dir
    say(f"cloud-coordinator init --data-dir {data_dir} --hostname localhost")
    result = bootstrap.init(data_dir, ["localhost"])
    click.echo(f"  CA fingerprint {result.ca_fingerprint}")
    say(f"cloud-coordinator serve --data-dir {data_dir} --listen 127.0.0.1:0 --enroll-listen 127.0.0.1:0")
    world.spawn(
        "coordinator",
        [
            "cloud_coordinator",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            "--enroll-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            *(["--console-listen", "127.0.0.1:0"] if console_installed() else []),
        ],
        data_dir / "run" / "endpoints.json",
    )
    endpoints = world.endpoints()
    click.echo(
        f"  serving agents and operators on {endpoints['address']} (mTLS), enrollment on "
        f"{endpoints['enroll_address']}, metrics on http://{endpoints['metrics_address']}/metrics"
    )


def enroll_sites(world: DemoWorld) -> None:
    """Enroll two hospitals and a factory: keys made at each site, one-time tokens."""
    operator = world.operator()
    for name, kind, tags in SITES:
        tag_args = " ".join(f"--tag {k}={v}" for k, v in tags.items())
        say(f"cloud-coordinator sites add {name} --kind {kind} {tag_args}")
        added = operator.add_site(name, kind, tags)
        data_dir = world.site_dir(name)
        say(f"{enroll_command({**added, 'token': added['token'][:10] + '...'})} --data-dir {data_dir}")
        result = enroll_mod.enroll(
            data_dir, added["coordinator_address"], added["token"], added["ca_fingerprint"], added["enroll_address"]
        )
        world.sites[name] = {"kind": kind, "data_dir": data_dir}
        click.echo(f"  {name}: enrolled, certificate valid until {result.certificate_expires_at}")


def start_agents(world: DemoWorld) -> None:
    """Start each site's agent daemon; it dials out and holds a control stream."""
    for name, site in world.sites.items():
        if site["kind"] == "hospital":
            configure_hospital(site["data_dir"], "patients", "scans")
        say(f"edge-agent run --data-dir {site['data_dir']}")
        world.spawn(
            f"agent-{name}",
            ["edge_agent", "run", "--data-dir", str(site["data_dir"])],
            site["data_dir"] / "run" / "endpoints.json",
        )
    operator = world.operator()
    world.wait_until(
        lambda: all(s["state"] == "online" and s["last_heartbeat"] for s in operator.list_sites()),
        30,
        "all sites online",
    )
    time.sleep(1.2)  # let a heartbeat with resources arrive
    say("cloud-coordinator sites list")
    rows = [
        [
            s["name"],
            s["kind"],
            s["state"],
            s["version"],
            s["resources"]["cpu_count"],
            f"{s['resources']['memory_available_bytes'] / 2**30:.1f} GiB",
            ",".join(f"{k}={v}" for k, v in s["tags"].items()),
        ]
        for s in operator.list_sites()
    ]
    click.echo(indent(table(["SITE", "KIND", "STATE", "VERSION", "CPUS", "MEM FREE", "TAGS"], rows)))


def configure_hospital(data_dir: Path, *datasets: str) -> None:
    """The site admin's policy (agent.toml): which datasets federated jobs may train on; and
    Prometheus metrics for the site's monitoring, on a free loopback port."""
    import dataclasses

    from edge_agent.daemon import load_config
    from edge_agent.layout import AgentLayout
    from silolink import config

    cfg = load_config(data_dir, environ={})
    training = dataclasses.replace(cfg.training, datasets=datasets)
    cfg = dataclasses.replace(cfg, training=training, metrics_listen="127.0.0.1:0")
    AgentLayout(data_dir).config.write_text(config.dump(cfg))
