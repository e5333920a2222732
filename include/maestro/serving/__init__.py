"""Real-time serving: the model server, its serving plans, prediction log and deployments."""
