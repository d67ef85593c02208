"""tabular: silolink's built-in Flower app (softmax regression or a small MLP on a catalog table)."""
