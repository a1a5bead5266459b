#!/bin/sh
# Create the cluster's secrets on your machine, once: ~/.scenimefy/cluster.env (mode 600).
#   sh cluster/make-secrets.sh
# The cluster launcher copies the file to every node (cluster/aws-gpu.yaml, file_mounts); on
# Kubernetes, load it into a Secret instead (cluster/README.md, "Security"). Never commit it.
# An existing file is kept: the passwords are already in the database and MLflow's user store.
set -eu
out="${1:-$HOME/.scenimefy/cluster.env}"
if [ -e "$out" ]; then
    echo "$out exists; kept as it is" >&2
    exit 0
fi
mkdir -p "$(dirname "$out")"
umask 077
tmp="$out.tmp.$$"
{
    echo "MLFLOW_TRACKING_USERNAME=admin"
    echo "MLFLOW_TRACKING_PASSWORD=$(openssl rand -hex 24)"
    echo "POSTGRES_PASSWORD=$(openssl rand -hex 24)"
    echo "MLFLOW_FLASK_SERVER_SECRET_KEY=$(openssl rand -hex 32)"
} > "$tmp"
mv "$tmp" "$out"
echo "wrote $out (MLflow user admin; its password is MLFLOW_TRACKING_PASSWORD)" >&2
