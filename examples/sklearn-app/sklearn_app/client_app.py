"""sklearn-app: A Flower / scikit-learn app."""

import warnings

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from sklearn.metrics import accuracy_score, f1_score, log_loss

from sklearn_app.task import get_model, get_model_params, load_data, scaling_stats, set_initial_params, set_model_params

# Flower ClientApp
app = ClientApp()


def _model(msg: Message, context: Context):
    config = context.run_config
    model = get_model(str(config["penalty"]), int(config["local-epochs"]))
    set_initial_params(model, int(config["num-features"]), int(config["num-classes"]))
    return set_model_params(model, msg.content["arrays"].to_numpy_ndarrays())


@app.train()
def train(msg: Message, context: Context):
    """Train the model on local data."""
    model = _model(msg, context)
    X_train, y_train, _, _ = load_data(context.node_config)
    with warnings.catch_warnings():  # max_iter is the local epochs: sklearn warns that it stopped early
        warnings.simplefilter("ignore")
        model.fit(X_train, y_train)
    loss = log_loss(y_train, model.predict_proba(X_train), labels=model.classes_)
    metrics = {"train_logloss": loss, "num-examples": len(X_train), **scaling_stats(context.node_config)}
    content = RecordDict({"arrays": ArrayRecord(get_model_params(model)), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    """Evaluate the global model on local held-out data."""
    model = _model(msg, context)
    _, _, X_test, y_test = load_data(context.node_config)
    predictions = model.predict(X_test)
    metrics = {
        "test_logloss": log_loss(y_test, model.predict_proba(X_test), labels=model.classes_),
        "accuracy": accuracy_score(y_test, predictions),
        "f1": f1_score(y_test, predictions, average="macro"),
        "num-examples": len(X_test),
    }
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
