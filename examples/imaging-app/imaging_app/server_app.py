"""The imaging app's ServerApp: the built-in tabular app's, unchanged.

The ClientApp answers the same messages (per-pixel statistics, local epochs, evaluation), so
the tabular ServerApp's federated scaling, FedAvg rounds, ONNX export (``X`` of shape
[rows, pixels] -> ``label``, ``probabilities``) and model publishing serve images as they
serve tables.
"""

from silolink_apps.tabular_app.server_app import app

__all__ = ["app"]
