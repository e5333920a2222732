"""The model server's routes, by concern."""
