#!/bin/sh
# The cluster's MLflow tracking server: basic auth, PostgreSQL for runs and users, artifacts on
# the shared volume. Run by Docker (cluster/aws-gpu.yaml) or a Kubernetes Deployment
# (cluster/kuberay-storage-mlflow.yaml), each restarting it if it dies.
# Environment (from the cluster's secret, never committed): MLFLOW_TRACKING_USERNAME,
# MLFLOW_TRACKING_PASSWORD (the admin user), POSTGRES_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY.
# MLFLOW_ARTIFACTS (default /shared/mlflow/artifacts), MLFLOW_ALLOWED_HOSTS (Host headers served).
set -eu
: "${MLFLOW_TRACKING_PASSWORD:?set it from the cluster secret (cluster/make-secrets.sh)}"
: "${POSTGRES_PASSWORD:?set it from the cluster secret (cluster/make-secrets.sh)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set it from the cluster secret (cluster/make-secrets.sh)}"
export PGPASSWORD="$POSTGRES_PASSWORD"
export MLFLOW_AUTH_ADMIN_USERNAME="${MLFLOW_TRACKING_USERNAME:-admin}"
export MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-/home/ray/scenimefy/cluster/mlflow-basic-auth.ini}"
export MLFLOW_DISABLE_TELEMETRY=true
unset MLFLOW_TRACKING_PASSWORD POSTGRES_PASSWORD

# The user store's database, once; waits for PostgreSQL to accept connections (up to 2 minutes).
python - <<'PY'
import time

import psycopg2

for attempt in range(60):
    try:
        conn = psycopg2.connect(host="postgres", user="mlflow", dbname="mlflow", connect_timeout=5)
        break
    except psycopg2.OperationalError:
        if attempt == 59:
            raise
        time.sleep(2)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'mlflow_auth'")
    if cur.fetchone() is None:
        cur.execute("CREATE DATABASE mlflow_auth OWNER mlflow")
conn.close()
PY

exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 2 \
    --backend-store-uri postgresql://mlflow@postgres:5432/mlflow \
    --artifacts-destination "${MLFLOW_ARTIFACTS:-/shared/mlflow/artifacts}" \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost:*,127.0.0.1:*,10.*,172.*,192.168.*}"
