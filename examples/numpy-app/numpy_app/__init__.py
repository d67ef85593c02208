"""numpy-app: A Flower / NumPy app."""
