"""The deployment files, checked as far as this machine can without a container engine:
Kubernetes manifests against the API schemas (kubernetes-validate ships them, offline),
the compose file and Dockerfiles by structure, every command they run against our CLIs."""

from __future__ import annotations

import copy
import os
import re

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from .helpers import DEPLOY, ROOT, compose, dockerfile_stages, resolve_cli

K8S = DEPLOY / "kubernetes"
# The oldest Kubernetes still commonly run and the newest the schemas cover.
K8S_VERSIONS = ["1.29.0", "1.37.0"]


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version):
    checked = []
    for name, doc in manifests():
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(f"{name}:{doc['kind']}")
    assert len(checked) >= 6


def test_the_schema_check_catches_a_misspelt_field():
    statefulset = copy.deepcopy(by_kind("StatefulSet")[0])
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["cmd"] = ["x"]
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(statefulset, K8S_VERSIONS[-1], strict=True)


def test_kustomization_applies_every_manifest_but_the_example_secret():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "seed-secret.example.yaml"}
    assert listed == on_disk


def test_coordinator_pod_is_non_root_probed_by_the_health_command_and_bounded():
    (statefulset,) = by_kind("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 1  # one SQLite database, one CA
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    for container in pod["initContainers"] + pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert "data" in {m["name"] for m in container["volumeMounts"]} and "data" in claims
    (coordinator,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = coordinator[probe]["exec"]["command"]
        assert resolve_cli(command).name == "health"
        assert coordinator[probe]["timeoutSeconds"] > int(command[command.index("--timeout") + 1].rstrip("s"))
    # The seed Secret the init container restores from is the one the example shows.
    (secret,) = by_kind("Secret")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["seed"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert "seed.tar.gz" in secret["data"]
    seed_env = {e["name"]: e["value"] for e in pod["initContainers"][0]["env"]}
    mount = next(m for m in pod["initContainers"][0]["volumeMounts"] if m["name"] == "seed")
    assert seed_env["SILOLINK_SEED_FILE"] == f"{mount['mountPath']}/seed.tar.gz"


def test_services_route_to_ports_the_coordinator_opens():
    (statefulset,) = by_kind("StatefulSet")
    ports = {p["name"]: p["containerPort"] for p in statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"grpc-mtls": 7443, "grpc-enroll": 7444, "metrics": 9464}
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    public = services["silolink-coordinator"]["spec"]
    assert public["type"] == "LoadBalancer"
    assert {p["targetPort"] for p in public["ports"]} == {"grpc-mtls", "grpc-enroll"}  # metrics stay inside
    assert services[statefulset["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert service["spec"]["selector"].items() <= statefulset["spec"]["template"]["metadata"]["labels"].items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_compose_runs_a_coordinator_two_agents_and_their_enrollment_init_steps():
    spec = compose()
    services = spec["services"]
    agents = [name for name, s in services.items() if s.get("command") == ["run"]]
    assert len(agents) == 2
    declared = set(spec["volumes"])
    for name, service in services.items():
        dockerfile = (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
        assert dockerfile.exists(), f"{name}: no {dockerfile}"
        for volume in service["volumes"]:
            assert volume.split(":")[0] in declared, f"{name} mounts an undeclared volume {volume}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
        assert service["read_only"] and service["cap_drop"] == ["ALL"]
    assert resolve_cli(services["coordinator"]["healthcheck"]["test"][1:]).name == "health"
    for agent in agents:
        resolve_cli(services[agent]["healthcheck"]["test"][1:])
        (init,) = services[agent]["depends_on"]
        assert services[agent]["depends_on"][init]["condition"] == "service_completed_successfully"
        assert services[init]["command"] == ["enroll"] and services[init]["restart"] == "no"
        assert services[init]["depends_on"]["coordinator"]["condition"] == "service_healthy"
        # The init step writes into the volume the agent then runs from.
        assert services[agent]["volumes"][0] in services[init]["volumes"]
        credentials = services[init]["environment"]["SILOLINK_OPERATOR_CREDENTIALS"]
        coordinator_mount = next(v for v in services[init]["volumes"] if v.startswith("coordinator-data:"))
        assert coordinator_mount.endswith(":ro") and credentials.startswith(coordinator_mount.split(":")[1])
    # Every named volume persists something.
    used = {v.split(":")[0] for s in services.values() for v in s["volumes"]}
    assert used == declared


@pytest.mark.parametrize("side", ["coordinator", "agent"])
def test_dockerfiles_build_in_stages_and_run_non_root_with_a_health_check(side):
    stages = dockerfile_stages(DEPLOY / "docker" / f"Dockerfile.{side}")
    assert len(stages) >= 2
    final = dict(stages[-1])  # the last value of each instruction
    assert not any(k == "RUN" and re.search(r"apt-get|gcc|build-essential", v) for k, v in stages[-1])
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    health = final["HEALTHCHECK"].split(" CMD ", 1)[1]
    assert resolve_cli(yaml.safe_load(health)).name == "health"
    entrypoint = yaml.safe_load(final["ENTRYPOINT"])[0]
    copied = next(v for k, v in stages[-1] if k == "COPY" and v.endswith(entrypoint)).split()
    script = ROOT / copied[-2]
    assert script.exists() and os.access(script, os.X_OK)
    for keyword, value in (i for stage in stages for i in stage):
        if keyword == "COPY" and "--from" not in value:
            for source in value.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"COPY of a missing {source}"
