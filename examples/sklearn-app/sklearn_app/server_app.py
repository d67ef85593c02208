"""sklearn-app: A Flower / scikit-learn app."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from sklearn_app.task import export_onnx, get_model, get_model_params, set_initial_params, set_model_params

try:  # silolink's registry, when silolink is installed (a no-op outside a silolink job)
    from silolink.serverapp import publish_model
except ImportError:
    publish_model = None

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
    rounds = int(config["num-server-rounds"])
    final = result.evaluate_metrics_clientapp.get(rounds, {})
    print(f"sklearn-app: final evaluate metrics {dict(final)}")
    if publish_model is not None:  # the global model as ONNX, imputing and scaling raw columns as the sites did
        set_model_params(model, result.arrays.to_numpy_ndarrays())
        onnx = export_onnx(model, result.train_metrics_clientapp[rounds])
        published = publish_model(onnx, name=str(config["model-name"]), description="sklearn-app, FedAvg")
        print(f"sklearn-app: model {published or 'not published (not in a silolink job)'}")
