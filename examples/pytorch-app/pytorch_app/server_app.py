"""pytorch-app: A Flower / PyTorch app."""

from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from pytorch_app import task

try:  # silolink's registry, when the app runs on silolink; anywhere else the .onnx file is the result
    from silolink.serverapp import publish_model
except ImportError:
    publish_model = None

# Flower ServerApp
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg for num-server-rounds rounds, then the global network as ONNX."""
    config = context.run_config
    net = task.Net(int(config["num-features"]), int(config["hidden-units"]), int(config["num-classes"]))
    nodes = int(config["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(config["fraction-train"]),
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
    )
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=int(config["num-server-rounds"])
    )
    final = result.evaluate_metrics_clientapp.get(int(config["num-server-rounds"]), {})
    print(f"pytorch-app: final evaluate metrics {dict(final)}")
    net.load_state_dict(result.arrays.to_torch_state_dict())
    path = task.export_onnx(net, Path.cwd() / f"{config['model-name']}.onnx")
    print(f"pytorch-app: exported {path.name} ({path.stat().st_size} bytes)")
    if publish_model is not None:
        published = publish_model(path, name=str(config["model-name"]), description="pytorch-app, FedAvg")
        print(f"pytorch-app: published {published}")
