"""Real-time serving: the model server, its serving plans, scorers, prediction log and batch
scoring."""
