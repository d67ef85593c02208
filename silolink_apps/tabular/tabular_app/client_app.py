"""tabular: the ClientApp. Its logic is the site's (``edge_agent.training.tabular``): the
site's data, federated feature statistics, local epochs and evaluation on held-out rows."""

from edge_agent.training.tabular import app

__all__ = ["app"]
