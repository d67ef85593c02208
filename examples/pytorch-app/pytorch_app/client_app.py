"""pytorch-app: A Flower / PyTorch app."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from pytorch_app import task

# Flower ClientApp
app = ClientApp()


def _net(msg: Message, context: Context) -> task.Net:
    config = context.run_config
    net = task.Net(int(config["num-features"]), int(config["hidden-units"]), int(config["num-classes"]))
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return net


@app.train()
def train(msg: Message, context: Context):
    """Train the global network on local data."""
    net = _net(msg, context)
    config = context.run_config
    batches, _, _ = task.load_data(context.node_config, int(config["batch-size"]))
    loss = task.train(net, batches, int(config["local-epochs"]), float(config["learning-rate"]))
    metrics = {"train_loss": loss, "num-examples": len(batches.dataset)}
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    """Evaluate the global network on local held-out data."""
    net = _net(msg, context)
    _, X_test, y_test = task.load_data(context.node_config, int(context.run_config["batch-size"]))
    loss, accuracy = task.test(net, X_test, y_test)
    metrics = {"eval_loss": loss, "eval_accuracy": accuracy, "num-examples": len(y_test)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
