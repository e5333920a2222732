"""Monitoring: drift and model quality in production, from the prediction log and ground truth."""
