"""Every file in cluster/ is valid for the tool that reads it."""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.version import Version

from pdsweep.cli import build_parser

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
# KubeRay's own CRDs, as released (tests/data/README.md): the oldest KubeRay the manifests claim.
KUBERAY_VERSION = "1.5.1"
CRDS = Path(__file__).resolve().parent / "data" / "kuberay"
OLDEST_RAY = Version("2.52")  # pyproject's floor: token authentication
# ObjectMeta's fields (Kubernetes API): the CRDs leave metadata to the API server, which checks these.
OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "ownerReferences", "finalizers"}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_follow_rays_schema(name: str) -> None:
    config = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(config, SCHEMA)  # the schema that ships inside the ray package
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` checks after filling defaults
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes
    workers = [n for key, n in nodes.items() if key != config["head_node_type"]]
    assert workers and all(n["max_workers"] > n["min_workers"] == 0 for n in workers)  # autoscaling from zero
    commands = " ".join(config["setup_commands"] + config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "pip install -e /home/ubuntu/pdsweep" in commands and "mlflow server" in commands
    assert f'"ray[tune,default]=={ray.__version__}"' in commands  # every node on the Ray the tests ran
    assert commands.count("RAY_AUTH_MODE=token") == 2  # head and workers alike
    assert "~/.ray/auth_token" in config["file_mounts"].values()


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_the_launchers_mlflow_server_listens_on_the_head_only(name: str) -> None:
    """MLflow's server has no authentication here: it must not listen on a public interface."""
    config = yaml.safe_load((CLUSTER / name).read_text())
    (command,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    words = shlex.split(command.split("mlflow server", 1)[1].split(">", 1)[0])
    assert words[words.index("--host") + 1] == "127.0.0.1"
    assert "--app-name" not in words or words[words.index("--app-name") + 1] == "basic-auth"
    readme = (CLUSTER / "README.md").read_text()
    assert "ssh -N -L 5000:127.0.0.1:5000" in readme and "ray attach cluster/aws.yaml -p 5000" in readme


def test_a_broken_launcher_config_is_caught() -> None:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["head_nodes"] = 1  # a typo of a top-level key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)


def strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as a JSON Schema that refuses unknown fields, as
    ``kubectl apply --validate=strict`` does (the API server's structural schemas drop them
    silently otherwise). Objects marked ``x-kubernetes-preserve-unknown-fields`` keep theirs."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) if key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not") else value
           for key, value in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def crd_schema(kind: str) -> dict:
    """The strict schema of KubeRay's ``kind`` (RayJob, RayCluster) at API version ray.io/v1."""
    text = gzip.decompress((CRDS / f"ray.io_{kind.lower()}s.yaml.gz").read_bytes())
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1 MB of YAML: libyaml if present
    assert crd["spec"]["names"]["kind"] == kind
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(v1["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object", "properties": {k: {} for k in OBJECT_META},
                                        "additionalProperties": False}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


def validate_manifest(manifest: dict) -> None:
    assert manifest["apiVersion"] == "ray.io/v1"
    jsonschema.validate(manifest, crd_schema(manifest["kind"]))


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_manifests_follow_kuberays_crds(name: str) -> None:
    text = (CLUSTER / "kuberay" / name).read_text()
    validate_manifest(yaml.safe_load(text))
    assert f"KubeRay >= {KUBERAY_VERSION}" in text  # the comment names the CRDs this test holds them to


# Misspelled or misplaced fields, each one a manifest the API server would take in silence
# (dropping the field) and `kubectl apply --validate=strict` refuses.
TYPOS = [
    ("spec.rayClusterSpec.headGroupSpec.rayStartParam", {}),
    ("spec.rayClusterSpec.workerGroupSpecs.0.maxReplica", 8),
    ("spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0.imagePullPolice", "Always"),
    ("spec.shutdownAfterJobFinish", True),
    ("spec.rayClusterSpec.authOption", {"mode": "token"}),
    ("metadata.label", {"app": "pdsweep"}),
]


@pytest.mark.parametrize(("path", "value"), TYPOS)
def test_the_kuberay_schema_refuses_a_misspelled_field(path: str, value: Any) -> None:
    manifest = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    *parents, leaf = path.split(".")
    node: Any = manifest
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    with pytest.raises(jsonschema.ValidationError, match=re.escape(leaf)):
        validate_manifest(manifest)


def test_the_kuberay_schema_refuses_a_wrong_type() -> None:
    manifest = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(manifest)


def _ray_version_of(image: str) -> Version:
    return Version(image.split(":", 1)[1].split("-", 1)[0])


def _group_containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml"])
def test_kuberay_manifests_have_what_the_operator_needs(name: str) -> None:
    manifest = yaml.safe_load((CLUSTER / "kuberay" / name).read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["metadata"]["name"]
    if manifest["kind"] == "RayJob":
        assert manifest["spec"]["entrypoint"].startswith("python -m pdsweep run ")
        assert "--runs-dir s3://" in manifest["spec"]["entrypoint"]
        run = build_parser().parse_args(shlex.split(manifest["spec"]["entrypoint"])[3:])  # pdsweep's own flags
        assert run.concurrency and run.runs_dir.startswith("s3://")  # an autoscaler is asked for more than it has
        cluster = manifest["spec"]["rayClusterSpec"]
    else:
        assert manifest["kind"] == "RayCluster"
        cluster = manifest["spec"]
    assert Version(cluster["rayVersion"]) >= OLDEST_RAY and cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert {p["containerPort"] for p in _group_containers(head)[0]["ports"]} >= {6379, 8265}
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["groupName"] and gpu["maxReplicas"] >= gpu["minReplicas"] >= 0
    for container in _group_containers(gpu):
        assert _ray_version_of(container["image"]) == Version(cluster["rayVersion"])  # the image runs the Ray it names
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_slurm_script_parses_and_starts_a_head_then_workers() -> None:
    script = CLUSTER / "slurm" / "pdsweep.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.index("ray start --head") < text.index("ray start --address") < text.index("python3 -m pdsweep run")
    assert "RAY_AUTH_MODE=token" in text and "trap cleanup EXIT" in text and "#SBATCH --nodes=" in text
    steps = [line for line in text.splitlines() if line.lstrip().startswith("srun ") and "hostname" not in line]
    assert len(steps) == 3 and all("--overlap" in step for step in steps)  # Ray's steps never block the cleanup


def test_readme_names_every_file() -> None:
    readme = (CLUSTER / "README.md").read_text()
    for path in CLUSTER.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(CLUSTER)) in readme, path
