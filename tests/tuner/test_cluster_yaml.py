"""cluster.yaml is a valid Ray cluster-launcher config (the schema the installed ray ships)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_config(), schema)


def test_schema_catches_a_typo():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    bad = {**_config(), "max_worker": 3}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError as err:
        assert "max_worker" in str(err)
    else:
        raise AssertionError("a misspelt top-level key passed the schema")


def test_cluster_has_gpus_token_auth_and_installs_lamtune():
    cfg = _config()
    gpu_types = [t for t in cfg["available_node_types"].values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types, "no GPU worker type"
    assert "cu" in cfg["docker"]["image"]
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert any("auth_token" in k for k in cfg["file_mounts"])
    assert any("RAY_AUTH_MODE=token ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])
    assert any("pip install" in c and "lamtune" in c for c in cfg["setup_commands"])
