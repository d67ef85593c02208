"""numpy-app: A Flower / NumPy app."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from numpy_app import task

try:  # silolink's ONNX exporter and registry, when silolink is installed (no-ops outside a silolink job)
    from silolink.serverapp import publish_model
    from silolink.softmax import onnx_bytes
except ImportError:
    publish_model = onnx_bytes = None

# Flower ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg from a zero model for num-server-rounds rounds."""
    config = context.run_config
    arrays = ArrayRecord(task.init_model(int(config["num-features"]), int(config["num-classes"])))
    nodes = int(config["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
    )
    result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=int(config["num-server-rounds"]))
    rounds = int(config["num-server-rounds"])
    final = result.evaluate_metrics_clientapp.get(rounds, {})
    print(f"numpy-app: final evaluate metrics {dict(final)}")
    if onnx_bytes is not None:  # the global model as ONNX, scaling raw columns as the sites did together
        W, b = result.arrays.to_numpy_ndarrays()
        mean, std = task.pooled_scaling(result.train_metrics_clientapp[rounds])
        model = onnx_bytes({"W": W, "b": b}, mean, std)
        published = publish_model(model, name=str(config["model-name"]), description="numpy-app, FedAvg")
        print(f"numpy-app: model {published or 'not published (not in a silolink job)'}")
