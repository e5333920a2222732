"""Deployment: rollout strategies over a serving plan, and the Kubernetes objects of a model
server."""
