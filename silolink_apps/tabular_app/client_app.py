"""The built-in ``tabular`` app's ClientApp. Its logic is the site's
(``edge_agent.training.tabular``): the site's data through the public data helper, federated
feature statistics (``query.stats``), local epochs, and evaluation on held-out rows."""

from edge_agent.training.tabular import app

__all__ = ["app"]
