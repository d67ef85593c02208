"""numpy-app: A Flower / NumPy app."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from numpy_app import task

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
    final = result.evaluate_metrics_clientapp.get(int(config["num-server-rounds"]), {})
    print(f"numpy-app: final evaluate metrics {dict(final)}")
