-- Databases of the platform's stores on one PostgreSQL server (airflow is created by the image).
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
CREATE DATABASE feast;
CREATE DATABASE monitoring;
