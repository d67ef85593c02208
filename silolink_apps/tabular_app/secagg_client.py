"""The built-in ``tabular-secagg`` app's ClientApp: the tabular model behind a NumPyClient,
with Flower's ``secaggplus_mod`` masking each update before it leaves the site
(``edge_agent.training.tabular_secagg``)."""

from edge_agent.training.tabular_secagg import app

__all__ = ["app"]
