# The platform's image: Airflow 3.3 on Python 3.11 with the pinned requirements and the
# `maestro` package; used by every service in docker-compose.yaml (and later the deployer pod).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt pyproject.toml /opt/maestro/
RUN pip install --no-cache-dir -r /opt/maestro/requirements.txt
COPY --chown=airflow:0 . /opt/maestro
RUN pip install --no-cache-dir --no-deps -e /opt/maestro
ENV MAESTRO_PROJECT_DIR=/opt/maestro \
    MAESTRO_HOME=/opt/maestro/state \
    AIRFLOW_CONFIG=/opt/maestro/airflow.cfg
WORKDIR /opt/maestro
