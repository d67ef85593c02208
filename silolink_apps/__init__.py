"""silolink's built-in Flower apps, each an ordinary Flower app directory (pyproject.toml with
[tool.flwr.app], a ServerApp and a ClientApp) that runs through the same path as users' apps.

Each half runs on its own side: the ClientApp at the sites (it reads the site's catalog
through ``edge_agent``), the ServerApp in the coordinator's job process. So this package sits
outside the layering rule that keeps ``edge_agent`` and ``cloud_coordinator`` apart; neither
daemon imports it, they load the apps from these directories as they load any app.
"""
