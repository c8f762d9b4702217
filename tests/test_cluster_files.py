"""Every file in cluster/ is valid for the tool that reads it."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from pdsweep.cli import build_parser

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


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


def test_a_broken_launcher_config_is_caught() -> None:
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["max_workers"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["head_nodes"] = 1  # a typo of a top-level key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, SCHEMA)


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
    assert cluster["rayVersion"] >= "2.52" and cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert {p["containerPort"] for p in _group_containers(head)[0]["ports"]} >= {6379, 8265}
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["groupName"] and gpu["maxReplicas"] >= gpu["minReplicas"] >= 0
    for container in _group_containers(gpu):
        assert container["image"].startswith("rayproject/ray:2.60")
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
