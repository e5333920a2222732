"""The platform's append-and-query logs, each a table in one store chosen by its location
(`store.open_store`: parquet under a folder, or PostgreSQL): the prediction log, labels
(ground truth) and batch scores."""
