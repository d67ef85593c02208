"""The built-in tabular apps: softmax regression or a small MLP on a catalog table."""
