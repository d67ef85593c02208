"""pytorch-app: A Flower / PyTorch app."""
