"""Every YAML in cluster/ and jobs/ parses, and the keys that matter agree with the code.

Checked: the cluster-launcher file passes Ray's own schema; every Ray container runs the one
image built by cluster/Dockerfile, with the Ray version this package runs; every job entrypoint
names a jobs/ script of a known workload whose config and overrides resolve; the GPUs a job
asks for exist in the cluster it runs on; all stages share one output dir on the shared
volume; MLflow and the shared volume are wired to what the storage manifest defines. The
security settings (token auth, bindings, MLflow auth, policies) are checked in test_cluster_security.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from scenimefy.commands.jobs_runner import WORKLOADS, check_gpus, parse_job_args, resolve_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SHARED = "/shared"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kind(kind: str) -> tuple[Path, dict]:
    found = [(p, d) for p in sorted(CLUSTER.glob("*.yaml")) for d in _docs(p) if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} manifest in cluster/, found {len(found)}"
    return found[0]


def _dockerfile() -> dict[str, str]:
    text = (CLUSTER / "Dockerfile").read_text()
    image = re.search(r"^ARG RAY_IMAGE=(\S+)", text, re.M).group(1)
    tag = re.search(r"docker build -f cluster/Dockerfile -t (\S+) \.", text).group(1)
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    return {"ray_image": image, "tag": tag, "workdir": workdir, "text": text}


def _ray_containers(cluster_spec: dict) -> list[dict]:
    groups = [cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _split_commands(entrypoint: str) -> list[list[str]]:
    """`cd DIR && python jobs/a.py ... && python jobs/b.py ...` -> [[python, jobs/a.py, ...], ...]."""
    return [shlex.split(part) for part in entrypoint.split("&&")]


def _job_commands(entrypoint: str) -> list[tuple[str, list[str]]]:
    jobs = []
    for argv in _split_commands(entrypoint):
        if argv[0] == "cd":
            continue
        assert argv[0] == "python" and re.fullmatch(r"jobs/\w+\.py", argv[1]), f"not a job entrypoint: {argv}"
        jobs.append((Path(argv[1]).stem, argv[2:]))
    return jobs


# ----------------------------------------------------------------------------------------


def test_every_yaml_parses():
    files = sorted(CLUSTER.glob("*.yaml")) + sorted((REPO / "jobs").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        docs = _docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path


def test_one_image_everywhere_with_this_ray_version():
    import ray

    docker = _dockerfile()
    image = docker["tag"]
    assert docker["ray_image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert f"ray{ray.__version__}" in image  # the tag says which Ray it carries
    launcher = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    images = {launcher["docker"]["image"]}
    for kind in ("RayCluster", "RayJob"):
        _, doc = _kind(kind)
        spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["rayVersion"] == ray.__version__
        images |= {c["image"] for c in _ray_containers(spec)}
    _, mlflow = _kind("Deployment")
    images |= {c["image"] for c in mlflow["spec"]["template"]["spec"]["containers"]}
    assert images == {image}
    for needed in ("COPY --chown=ray:users scenimefy", "COPY --chown=ray:users jobs", "pip install"):
        assert needed in docker["text"]


def test_cluster_launcher_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    validate_config(prepare_config(raw))
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # drivers only on the head
    gpu = [t for name, t in types.items() if name != raw["head_node_type"]]
    assert len(gpu) == 1 and re.match(r"(g|p)\d", gpu[0]["node_config"]["InstanceType"])  # an AWS GPU family
    assert 0 <= gpu[0]["min_workers"] < gpu[0]["max_workers"] <= raw["max_workers"]  # autoscaling bounds
    start = " ".join(raw["head_start_ray_commands"])
    assert (
        "ray start --head --port=6379" in start
        and "--dashboard-host=127.0.0.1" in start  # reached through `ray dashboard` (SSH), never 0.0.0.0
        and "--autoscaling-config" in start
    )
    assert "0.0.0.0" not in (CLUSTER / "aws-gpu.yaml").read_text()
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(raw["worker_start_ray_commands"])
    assert f"-v {SHARED}:{SHARED}" in raw["docker"]["run_options"]
    assert any(f"{SHARED}" in c and "mount" in c for c in raw["initialization_commands"])
    head_init = " ".join(head["initialization_commands"])
    assert any(f"{SHARED}" in c and "mount" in c for c in head["initialization_commands"])  # the head's own list
    assert "cluster/mlflow-server.sh" in head_init and "--restart unless-stopped" in head_init
    assert "MLFLOW_TRACKING_URI=http://" in start and ":5000" in start


def test_raycluster_heads_and_gpu_workers():
    _, doc = _kind("RayCluster")
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    # The dashboard answers the operator and the Ray pods on the pod's address, always behind the token.
    assert spec["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0", "dashboard-host": "0.0.0.0"}
    assert spec["authOptions"] == {"mode": "token"}
    (gpu,) = spec["workerGroupSpecs"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    ports = {p["containerPort"] for p in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265} <= ports


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_shared_volume_and_mlflow_are_wired(kind):
    _, doc = _kind(kind)
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    claims = {
        d["metadata"]["name"]
        for d in _docs(CLUSTER / "kuberay-storage-mlflow.yaml")
        if d["kind"] == "PersistentVolumeClaim"
    }
    rwx = [
        d
        for d in _docs(CLUSTER / "kuberay-storage-mlflow.yaml")
        if d["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in d["spec"]["accessModes"]
    ]
    assert len(rwx) == 1
    service = next(
        d
        for d in _docs(CLUSTER / "kuberay-storage-mlflow.yaml")
        if d["kind"] == "Service" and d["spec"]["selector"] == {"app": "mlflow"}
    )
    mlflow_uri = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            claim = volumes[mounts[SHARED]]["persistentVolumeClaim"]["claimName"]
            assert claim == rwx[0]["metadata"]["name"] and claim in claims
            env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
            assert env["MLFLOW_TRACKING_URI"] == mlflow_uri
            for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # basic auth, from the Secret
                assert env[var] == {"secretKeyRef": {"name": "scenimefy-mlflow", "key": var}}
    if kind == "RayJob":
        runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == mlflow_uri
        assert all(isinstance(v, str) for v in runtime_env["env_vars"].values())
    allowed = _mlflow_env()["MLFLOW_ALLOWED_HOSTS"]
    assert service["metadata"]["name"] in allowed.split(",")


def _mlflow_env() -> dict[str, str]:
    _, deployment = _kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["sh", "/home/ray/scenimefy/cluster/mlflow-server.sh"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_rayjob_runs_the_pipeline_stages_with_resolvable_configs():
    from scenimefy.distributed.cluster import storage_path_of
    from scenimefy.distributed.pairs import pairs_dir_of
    from scenimefy.distributed.pipeline import STAGES, TRAIN, plan_pipeline

    _, doc = _kind("RayJob")
    spec = doc["spec"]
    entry = spec["entrypoint"]
    workdir = _split_commands(entry)[0]
    assert workdir == ["cd", _dockerfile()["workdir"]]  # the checkout inside the image
    jobs = _job_commands(entry)
    assert [name for name, _ in jobs] == ["pipeline"]  # stages 0-3 in one driver, finished stages skipped on retry

    (gpu,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    cluster_gpus = gpu["minReplicas"] * int(limits["nvidia.com/gpu"])  # fixed-size cluster: GPUs there at start
    cpus_per_pod = float(limits["cpu"])
    ((name, argv),) = jobs
    assert name in WORKLOADS and (REPO / "jobs" / f"{name}.py").is_file()
    args = parse_job_args(name, argv)
    assert not args.allow_autoscale and not args.dry_run
    cfg = resolve_config(name, args, base_dir=REPO)
    check_gpus(name, cfg, cluster_gpus, allow_autoscale=False)  # raises if the job would wait for GPUs
    assert cfg.pairs.generator_actors + cfg.pairs.segmenter_actors <= cluster_gpus / cfg.pairs.gpus_per_actor
    assert cfg.run.cpus_per_worker <= cpus_per_pod
    assert cfg.run.output_dir.startswith(SHARED + "/")  # checkpoints and outputs on the shared volume
    assert storage_path_of(cfg).startswith(SHARED + "/")
    plan = plan_pipeline(cfg)
    assert [p.stage for p in plan.stages] == list(STAGES)  # no stage output given: all four run
    train = next(p for p in plan.stages if p.stage == TRAIN)
    assert train.cfg.data.pairs == str(pairs_dir_of(cfg))  # stage 3 reads stage 2's selection
    assert spec["shutdownAfterJobFinishes"] is True and spec["backoffLimit"] >= 1


def test_rtx3090_preset_asks_for_one_gpu():
    cfg = resolve_config("train", parse_job_args("train", ["--config", "rtx3090"]))
    assert cfg.run.use_gpu and cfg.run.num_workers == 1
    check_gpus("train", cfg, 1, allow_autoscale=False)
    for stage in ("pretrain", "finetune"):
        check_gpus(
            stage, resolve_config(stage, parse_job_args(stage, ["--config", "rtx3090"])), 1, allow_autoscale=False
        )


def test_readme_commands_parse_and_name_real_files():
    """Every `scenimefy submit` line of cluster/README.md parses with the real parser."""
    import argparse

    from scenimefy.commands.cluster import add_cluster_commands

    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    text = (CLUSTER / "README.md").read_text()
    code = "\n".join(re.findall(r"^```\n(.*?)^```", text, re.M | re.S)).replace("\\\n", " ")
    submits = [
        line.split("scenimefy submit", 1)[1].split("#")[0] for line in code.splitlines() if "scenimefy submit " in line
    ]
    submits = [s for s in submits if not s.strip().startswith("[")]  # the synopsis
    assert len(submits) >= 3
    for tail in submits:
        args = parser.parse_args(["submit", *shlex.split(tail)])
        assert args.workload in WORKLOADS
    for script in re.findall(r"python jobs/(\w+)\.py", text):
        assert script in WORKLOADS
    for path in set(re.findall(r"cluster/[\w.-]+\.(?:yaml|md)|cluster/Dockerfile", text)):
        assert (REPO / path).is_file(), path


# ----------------------------------------------------------------------------------------
# Serving: cluster/serve-scenimefy.yaml and the RayService that embeds it


def _serve_file() -> dict:
    return yaml.safe_load((CLUSTER / "serve-scenimefy.yaml").read_text())


def test_serve_config_passes_serves_schema_and_builds_with_valid_settings():
    from ray.serve.schema import ServeDeploySchema

    from scenimefy.serve.app import build_app, serve_config

    doc = _serve_file()
    ServeDeploySchema.parse_obj(doc)
    (app,) = doc["applications"]
    module, name = app["import_path"].split(":")
    assert (module, name) == ("scenimefy.serve.app", "build_app") and callable(build_app)
    args = dict(app["args"])
    assert args.pop("checkpoint").startswith(f"{SHARED}/")  # every node reads it from the shared volume
    cfg = serve_config(args)  # every arg is a valid `serve` setting
    assert cfg.device == "cuda" and cfg.replicas == 0 and cfg.min_replicas <= cfg.max_replicas
    assert doc["http_options"] == {"host": "0.0.0.0", "port": 8000}


def test_rayservice_runs_the_serve_application_on_the_image_with_token_auth():
    import ray

    _, doc = _kind("RayService")
    assert doc["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == _serve_file()  # the two never drift apart
    spec = doc["spec"]["rayClusterConfig"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}
    assert {c["image"] for c in _ray_containers(spec)} == {_dockerfile()["tag"]}
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert 8000 in {p["containerPort"] for p in head["ports"]}
    (gpu,) = spec["workerGroupSpecs"]
    assert 1 <= gpu["minReplicas"] <= gpu["maxReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    storage = [d for d in _docs(CLUSTER / "kuberay-storage-mlflow.yaml") if d["kind"] == "PersistentVolumeClaim"]
    for group in (spec["headGroupSpec"], gpu):
        volumes = group["template"]["spec"]["volumes"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
        assert claims == {"scenimefy-shared"} and claims <= {d["metadata"]["name"] for d in storage}
