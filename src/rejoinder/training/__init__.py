"""Training forward and reverse dialogue models with PyTorch Lightning (`rejoinder train`)."""
