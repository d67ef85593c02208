"""sklearn-app: A Flower / scikit-learn app."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from sklearn_app.task import get_model, get_model_params, set_initial_params

# Flower ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg from zero parameters for num-server-rounds rounds."""
    config = context.run_config
    model = get_model(str(config["penalty"]), int(config["local-epochs"]))
    set_initial_params(model, int(config["num-features"]), int(config["num-classes"]))
    nodes = int(config["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(get_model_params(model)),
        num_rounds=int(config["num-server-rounds"]),
    )
    final = result.evaluate_metrics_clientapp.get(int(config["num-server-rounds"]), {})
    print(f"sklearn-app: final evaluate metrics {dict(final)}")
