"""What drives a fitted model's predictions: permutation importance of feature groups (`importance`)."""
