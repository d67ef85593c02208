"""Federated training at the site: Flower messages run through the site's approved apps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from silolink.rpc.server import ServiceMount

if TYPE_CHECKING:
    from ..daemon import Agent


def attach(agent: Agent) -> list[ServiceMount]:
    from ..apps.store import AppStore
    from .host import FlowerHost

    apps = AppStore.open(agent.layout.state_db, agent.layout.apps_dir)
    host = FlowerHost(
        agent.config.training, agent.catalog, agent.layout.catalog_db, apps, agent.config.catalog.sensitive_for_apps
    )
    agent.dispatcher.register("flower", host.handle)
    agent.dispatcher.register("start_flower_job", host.start_job)
    agent.dispatcher.register("end_flower_job", host.end_job)
    agent.on_stop(host.stop)
    if agent.config.training.datasets:  # this site allows training: have the fork server ready
        import threading

        from .workers import prewarm

        threading.Thread(target=prewarm, name="clientapp-prewarm", daemon=True).start()
    return []
