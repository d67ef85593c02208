"""sklearn-app: A Flower / scikit-learn app."""
