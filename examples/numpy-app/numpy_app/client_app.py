"""numpy-app: A Flower / NumPy app."""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from numpy_app import task

# Flower ClientApp
app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    """Train the global model on local data."""
    model = msg.content["arrays"].to_numpy_ndarrays()
    X_train, y_train, _, _ = task.load_data(context.node_config)
    task.check_shapes(model, X_train, y_train)
    model = task.train(model, X_train, y_train, int(context.run_config["local-epochs"]),
                       float(context.run_config["learning-rate"]))  # fmt: skip
    loss, accuracy = task.evaluate(model, X_train, y_train)
    metrics = {"train_loss": loss, "train_accuracy": accuracy, "num-examples": len(y_train),
               **task.scaling_stats(context.node_config)}  # fmt: skip
    content = RecordDict({"arrays": ArrayRecord(model), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    """Evaluate the global model on local held-out data."""
    model = msg.content["arrays"].to_numpy_ndarrays()
    _, _, X_test, y_test = task.load_data(context.node_config)
    task.check_shapes(model, X_test, y_test)
    loss, accuracy = task.evaluate(model, X_test, y_test)
    metrics = {"eval_loss": loss, "eval_accuracy": accuracy, "num-examples": len(y_test)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
