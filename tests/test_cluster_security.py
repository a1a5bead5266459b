"""The shipped cluster configs keep their control planes authenticated and least exposed.

Checked on every file in cluster/: Ray token authentication on every cluster (launcher and
KubeRay); no dashboard or MLflow on 0.0.0.0 without authentication; MLflow with basic auth on
PostgreSQL (never SQLite), restarted when it dies, with flags the installed MLflow accepts;
NetworkPolicies admitting only what needs each port; non-root pods without privilege escalation
or service-account tokens they do not need; no secret in the repository, and the secrets script
producing every key the manifests read.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SECRET = "scenimefy-mlflow"


def _docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(CLUSTER.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _ray_cluster_specs() -> list[tuple[str, dict]]:
    """Every Ray cluster spec a KubeRay manifest defines (RayCluster, RayJob, RayService)."""
    specs = []
    for path, d in _docs():
        kind = d.get("kind")
        if kind == "RayCluster":
            specs.append((f"{path.name}:{kind}", d["spec"]))
        elif kind == "RayJob":
            specs.append((f"{path.name}:{kind}", d["spec"]["rayClusterSpec"]))
        elif kind == "RayService":
            specs.append((f"{path.name}:{kind}", d["spec"]["rayClusterConfig"]))
    return specs


def _pod_specs() -> list[tuple[str, dict, bool]]:
    """(where, pod spec, needs the Kubernetes API) for every pod the manifests create."""
    pods = []
    for where, spec in _ray_cluster_specs():
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        pods.append((f"{where} head", spec["headGroupSpec"]["template"]["spec"], autoscaling))
        for group in spec["workerGroupSpecs"]:
            pods.append((f"{where} {group['groupName']}", group["template"]["spec"], False))
    for path, d in _docs():
        if d.get("kind") in ("Deployment", "StatefulSet"):
            pods.append((f"{path.name}:{d['metadata']['name']}", d["spec"]["template"]["spec"], False))
    return pods


def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


# ----------------------------------------------------------------------------------------
# Ray: token authentication everywhere, the dashboard never open


def test_every_kuberay_cluster_uses_token_auth():
    specs = _ray_cluster_specs()
    assert len(specs) >= 2
    for where, spec in specs:
        assert spec.get("authOptions") == {"mode": "token"}, f"{where}: add authOptions: {{mode: token}}"
        dashboard_host = spec["headGroupSpec"]["rayStartParams"].get("dashboard-host", "127.0.0.1")
        assert dashboard_host in ("0.0.0.0", "127.0.0.1"), where  # 0.0.0.0 only behind the token (above)


def test_the_launcher_runs_every_node_with_token_auth_and_a_local_dashboard():
    raw = _launcher()
    assert "--env RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), key
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    # The token travels from the user's machine to every node, never through the repository.
    assert raw["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    # MLflow's port is published on the head's private address and loopback only, never on all interfaces.
    init = " ".join(raw["available_node_types"][raw["head_node_type"]]["initialization_commands"])
    published = re.findall(r"-p (\S+)", init)
    assert published and all(not re.fullmatch(r"\d+:\d+", p) and not p.startswith("0.0.0.0") for p in published)


def test_the_heads_mlflow_reads_the_secrets_where_the_launcher_stages_them():
    """file_mounts reach the host before initialization_commands run, under Ray's mount location."""
    from ray.autoscaler.sdk import get_docker_host_mount_location

    raw = _launcher()
    (target,) = [t for t in raw["file_mounts"] if t.endswith("/cluster.env")]
    staged = f"{get_docker_host_mount_location(raw['cluster_name'])}/{target.lstrip('/')}"
    init = raw["available_node_types"][raw["head_node_type"]]["initialization_commands"]
    assert any(c.startswith(f"install -m 600 {staged} ") for c in init), staged
    assert raw["file_mounts"][target] == "~/.scenimefy/cluster.env"


def test_local_runs_keep_rays_default_authentication():
    source = (REPO / "scenimefy" / "distributed" / "cluster.py").read_text()
    assert not re.search(r"RAY_AUTH_MODE[\"']?\s*,\s*[\"']disabled", source)


# ----------------------------------------------------------------------------------------
# MLflow: basic auth, PostgreSQL, supervised


def _server_flags() -> list[str]:
    text = (CLUSTER / "mlflow-server.sh").read_text()
    command = text[text.index("exec mlflow server") :].replace("\\\n", " ")
    return re.findall(r"(--[a-z-]+)", command)


def test_mlflow_serves_with_basic_auth_on_postgres():
    script = (CLUSTER / "mlflow-server.sh").read_text()
    assert "--app-name basic-auth" in script
    assert "--backend-store-uri postgresql://" in script and "sqlite" not in script.lower()
    ini = (CLUSTER / "mlflow-basic-auth.ini").read_text()
    assert re.search(r"^database_uri = postgresql://\w+@postgres:5432/\w+$", ini, re.M)
    assert "admin_password" not in ini  # from the Secret at run time, never in a file
    for source in [*map(Path.read_text, CLUSTER.glob("*.yaml")), script, ini]:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
        assert "sqlite" not in code.lower()  # no SQLite backend anywhere (comments may name it)


def test_mlflow_server_flags_exist_in_the_installed_mlflow():
    flags = set(_server_flags())
    assert {"--app-name", "--backend-store-uri", "--artifacts-destination", "--allowed-hosts", "--host"} <= flags
    out = subprocess.run(
        [sys.executable, "-m", "mlflow", "server", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for flag in flags:
        assert flag in out, flag
    assert "[basic-auth]" in out


def test_mlflow_and_postgres_are_restarted_and_postgres_is_not_on_nfs():
    kinds = {
        (d["kind"], d["metadata"]["name"]): d for _, d in _docs() if d.get("kind") in ("Deployment", "StatefulSet")
    }
    mlflow, postgres = kinds[("Deployment", "mlflow")], kinds[("StatefulSet", "postgres")]
    assert mlflow["spec"]["replicas"] == 1 and postgres["spec"]["replicas"] == 1
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim["spec"]
    env = {e["name"]: e for e in postgres["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "POSTGRES_PASSWORD"}
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


# ----------------------------------------------------------------------------------------
# Kubernetes: network policies, pod security


def _policies() -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for _, d in _docs() if d.get("kind") == "NetworkPolicy"}


def test_network_policies_deny_by_default_and_admit_only_what_needs_each_port():
    policies = _policies()
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    ray_pods = {"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}
    (rule,) = policies["mlflow"]["ingress"]
    assert policies["mlflow"]["podSelector"] == {"matchLabels": {"app": "mlflow"}}
    assert rule == {"from": [ray_pods], "ports": [{"port": 5000, "protocol": "TCP"}]}
    (rule,) = policies["postgres"]["ingress"]
    assert rule == {
        "from": [{"podSelector": {"matchLabels": {"app": "mlflow"}}}],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }
    (rule,) = policies["ray-dashboard"]["ingress"]
    assert rule["ports"] == [{"port": 8265, "protocol": "TCP"}]
    (rule,) = policies["ray-pods"]["ingress"]
    assert rule == {"from": [ray_pods]}
    # the selectors match the pods the manifests define
    labels = [
        d["spec"]["template"]["metadata"]["labels"]
        for _, d in _docs()
        if d.get("kind") in ("Deployment", "StatefulSet")
    ]
    assert {"app": "mlflow"} in labels and {"app": "postgres"} in labels


def test_every_pod_runs_non_root_without_privilege_escalation_or_needless_tokens():
    pods = _pod_specs()
    assert len(pods) >= 6
    for where, pod, needs_api in pods:
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") is True and security.get("runAsUser", 0) > 0, where
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, f"{where} {c['name']}"
            assert sc.get("capabilities") == {"drop": ["ALL"]}, f"{where} {c['name']}"
            assert not sc.get("privileged"), f"{where} {c['name']}"
        if not needs_api:
            assert pod.get("automountServiceAccountToken") is False, where


def test_the_dockerfile_runs_as_the_non_root_user():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^USER ray$", text, re.M) and "[cluster]" in text


# ----------------------------------------------------------------------------------------
# Secrets: never committed; the script makes every key the manifests read


def test_no_secret_values_in_the_repository():
    for _, d in _docs():
        assert d.get("kind") != "Secret", "Secrets are created from files outside the repository"
    for where, pod, _ in _pod_specs():
        for c in pod["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|TOKEN|SECRET", e["name"]):
                    assert "value" not in e and "valueFrom" in e, f"{where}: {e['name']} must come from a Secret"
    for path in (p for p in CLUSTER.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        assert not re.search(r"(PASSWORD|TOKEN|SECRET_KEY)=[0-9a-f]{16,}", text), path


def test_make_secrets_writes_a_private_file_once_with_every_key_the_manifests_read(tmp_path):
    out = tmp_path / "secrets" / "cluster.env"
    subprocess.run(["sh", str(CLUSTER / "make-secrets.sh"), str(out)], check=True, capture_output=True, timeout=60)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in out.read_text().splitlines())
    read = {
        ref["key"]
        for _, pod, _ in _pod_specs()
        for c in pod["containers"]
        for e in c.get("env", [])
        if (ref := e.get("valueFrom", {}).get("secretKeyRef")) and ref["name"] == SECRET
    }
    read |= set(re.findall(r"\$\{?(MLFLOW_\w+|POSTGRES_\w+)", (CLUSTER / "mlflow-server.sh").read_text())) & {
        "MLFLOW_TRACKING_PASSWORD",
        "POSTGRES_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    }
    assert read and read <= set(values), read - set(values)
    assert len(values["MLFLOW_TRACKING_PASSWORD"]) >= 12  # MLflow refuses shorter admin passwords
    assert len(set(values.values())) == len(values)  # independent secrets
    before = out.read_text()
    subprocess.run(["sh", str(CLUSTER / "make-secrets.sh"), str(out)], check=True, capture_output=True, timeout=60)
    assert out.read_text() == before  # an existing file is never overwritten
