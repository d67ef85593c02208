"""The tabular app's model: softmax regression and, with hidden layers, a small MLP."""

import numpy as np
import onnxruntime as ort
import pytest

from silolink import softmax


def xor_data(rows: int = 600, seed: int = 0):
    """Two classes a linear model cannot separate: the sign of x0 * x1."""
    X = np.random.default_rng(seed).standard_normal((rows, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(np.int64)


def test_hidden_layers_learn_what_softmax_regression_cannot():
    X, y = xor_data()
    rng = np.random.default_rng(1)
    linear = softmax.train(softmax.init(2, 2), X, y, epochs=60, lr=0.1, rng=rng)
    mlp = softmax.train(softmax.init(2, 2, hidden=(16,), seed=3), X, y, epochs=60, lr=0.1, rng=rng)
    assert softmax.loss_accuracy(linear, X, y)[1] < 0.7
    assert softmax.loss_accuracy(mlp, X, y)[1] > 0.9


def test_training_lowers_the_loss_for_every_depth():
    X, y = xor_data(seed=4)
    for hidden in [(), (8,), (16, 8)]:
        start = softmax.init(2, 2, hidden, seed=5)
        trained = softmax.train(start, X, y, epochs=20, lr=0.05, rng=np.random.default_rng(0))
        assert softmax.loss_accuracy(trained, X, y)[0] < softmax.loss_accuracy(start, X, y)[0]
        assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in start.items()}


@pytest.mark.parametrize("hidden", [(), (8,), (16, 8)])
def test_the_exported_onnx_model_scores_as_numpy_does(tmp_path, hidden):
    rng = np.random.default_rng(6)
    params = softmax.init(5, 3, hidden, seed=7)
    params = {k: v + rng.standard_normal(v.shape) * 0.1 for k, v in params.items()}
    mean, std = rng.standard_normal(5), rng.uniform(0.5, 2.0, 5)
    X = rng.standard_normal((40, 5)).astype(np.float32)
    path = softmax.export_onnx(tmp_path / "model.onnx", params, mean, std)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"X": X})
    expected = softmax.probabilities(params, softmax.standardize(X.astype(np.float64), mean, std))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (labels == expected.argmax(axis=1)).all()


def test_names_and_the_legacy_list_order_round_trip():
    assert softmax.layer_names(1) == [("W", "b")]
    assert softmax.layer_names(3) == [("W1", "b1"), ("W2", "b2"), ("W3", "b3")]
    for hidden in [(), (4, 3)]:
        params = softmax.init(6, 2, hidden, seed=8)
        as_list = softmax.to_list(params)
        assert [a.shape for a in as_list] == [a.shape for w, b in softmax.layers(params) for a in (w, b)]
        back = softmax.from_list(as_list)
        assert all(np.array_equal(back[k], params[k]) for k in params)


def test_arrays_that_make_no_model_are_refused():
    with pytest.raises(ValueError, match="not a tabular model's layers"):
        softmax.layers({"W": np.zeros((3, 2))})
    with pytest.raises(ValueError, match="not a tabular model's layers"):
        softmax.layers({"W1": np.zeros((3, 2)), "b1": np.zeros(2), "W": np.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="layer 2 has weights \\[3, 2\\] and bias \\[2\\]: they do not chain"):
        softmax.layers({"W1": np.zeros((4, 5)), "b1": np.zeros(5), "W2": np.zeros((3, 2)), "b2": np.zeros(2)})
    with pytest.raises(ValueError, match="not weight/bias pairs"):
        softmax.from_list([np.zeros((3, 2)), np.zeros(2), np.zeros((2, 2))])
