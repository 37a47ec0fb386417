"""The generated deploy/kubernetes/ manifests: schema-valid, complete, and true to the runtime contract.

No kustomize or kubectl binary is needed: every object is validated offline against the official
schemas (kubernetes-validate, strict), and the overlay is rendered here by a small kustomize subset
(resources, components, strategic-merge patches by kind/name, namespace, labels, images), enough to
check what `kubectl apply -k` would send.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from baked import RUNTIME_VARS, BakedProject, bake

KUBERNETES = "deploy/kubernetes"
# The oldest Kubernetes minor we claim (preStop `sleep`, `matchLabelKeys`) and the newest one the
# library ships: both must accept every object.
KUBERNETES_VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]
KUSTOMIZATIONS = ["base", "components/cloudflared", "overlays/example"]
CLUSTER_SCOPED = {"Namespace"}
SECRET_NAMES = {"mcp-database-runtime", "mcp-database-owner", "mcp-vault", "mcp-credentials", "cloudflared-tunnel"}
RUNTIME_ROLE = "mcp_runtime"  # docker-compose.yml and deploy/postgres/init-roles.sh

Obj = dict[str, Any]


# ---- a small kustomize --------------------------------------------------------------------


def documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Obj:
    loaded: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return loaded


def key(obj: Obj) -> tuple[str, str]:
    return (obj["kind"], obj["metadata"]["name"])


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as far as these manifests need it: maps recursively, lists of named maps by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            merged[name] = merge(base[name], value) if name in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        by_name = {item["name"]: index for index, item in enumerate(base) if isinstance(item, dict) and "name" in item}
        result = list(base)
        for item in patch:
            if item["name"] in by_name:
                result[by_name[item["name"]]] = merge(result[by_name[item["name"]]], item)
            else:
                result.append(copy.deepcopy(item))
        return result
    return copy.deepcopy(patch)


def pod_specs(obj: Obj) -> Iterator[Obj]:
    template = obj.get("spec", {}).get("template")
    if template is not None:
        yield template["spec"]


def containers(obj: Obj) -> Iterator[Obj]:
    for spec in pod_specs(obj):
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def render(directory: Path) -> list[Obj]:
    """What `kustomize build directory` would produce (for the features these manifests use)."""
    spec = kustomization(directory)
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        objects.extend(render(target) if target.is_dir() else copy.deepcopy(documents(target)))
    for entry in spec.get("components", []):
        objects.extend(render(directory / entry))
    for entry in spec.get("patches", []):
        for patch in documents(directory / entry["path"]):
            matches = [i for i, obj in enumerate(objects) if key(obj) == key(patch)]
            assert len(matches) == 1, f"{directory.name}/{entry['path']}: no single {key(patch)} to patch"
            objects[matches[0]] = merge(objects[matches[0]], patch)
    for labels in spec.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(labels["pairs"])
            if labels.get("includeTemplates"):
                for template in [obj.get("spec", {}).get("template")]:
                    if template is not None:
                        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])
    if "namespace" in spec:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for obj in objects:
            for container in containers(obj):
                name, _, _ = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    keys = [key(obj) for obj in objects]
    assert len(keys) == len(set(keys)), f"{directory.name}: duplicate objects {keys}"
    return objects


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[
        {},
        {"project_name": "Acme Widgets", "http_port": "9123", "auth_mode": "bearer", "token_store": "postgres"},
    ],
    ids=["default", "acme-widgets-9123"],
)
def project(request: pytest.FixtureRequest, cookies_session: Any) -> BakedProject:
    return bake(cookies_session, **request.param)


@pytest.fixture(scope="module")
def root(project: BakedProject) -> Path:
    return project.path / KUBERNETES


@pytest.fixture(scope="module")
def overlay(root: Path) -> list[Obj]:
    return render(root / "overlays/example")


def the(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if key(obj) == (kind, name)]
    assert len(found) == 1, f"{kind}/{name} in {[key(o) for o in objects]}"
    return found[0]


def port(project: BakedProject) -> int:
    return int(project.context["http_port"])


# ---- structure and schemas ----------------------------------------------------------------


def test_every_kustomization_path_exists_and_every_file_is_used(root: Path) -> None:
    used: set[Path] = set()
    for name in KUSTOMIZATIONS:
        directory = root / name
        spec = kustomization(directory)
        assert spec["apiVersion"].startswith("kustomize.config.k8s.io/")
        used.add(directory / "kustomization.yaml")
        entries = [*spec.get("resources", []), *spec.get("components", [])]
        entries += [patch["path"] for patch in spec.get("patches", [])]
        assert entries, name
        for entry in entries:
            target = (directory / entry).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{name}: {entry}"
            used.add(target)
    manifests = {p.resolve() for p in root.rglob("*.yaml")}
    assert manifests - used == set(), "YAML files no kustomization uses"


def manifest_files(root: Path) -> list[Path]:
    patches = {
        (root / name / patch["path"]).resolve()
        for name in KUSTOMIZATIONS
        for patch in kustomization(root / name).get("patches", [])
    }
    return sorted(p for p in root.rglob("*.yaml") if p.name != "kustomization.yaml" and p.resolve() not in patches)


@functools.cache
def schema_errors(text: str, version: str) -> str | None:
    """The strict schema verdict on one object (cached: both bakes share most objects)."""
    obj = yaml.safe_load(text)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.utils.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        return f"no schema: {exc.message}"
    return None


def assert_valid(obj: Obj, where: str) -> None:
    text = yaml.safe_dump(obj, sort_keys=True)
    for version in KUBERNETES_VERSIONS:
        error = schema_errors(text, version)
        assert error is None, f"{where} {key(obj)} against Kubernetes {version}: {error}"


def test_every_manifest_is_valid_against_the_kubernetes_schemas(root: Path) -> None:
    files = manifest_files(root)
    assert len(files) >= 10
    for path in files:
        objects = documents(path)
        assert objects, path
        for obj in objects:
            assert_valid(obj, str(path.relative_to(root)))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_rendered_kustomization_is_valid(root: Path, name: str) -> None:
    # Patches are partial objects: they are validated merged into the objects they patch.
    for obj in render(root / name):
        assert_valid(obj, f"kustomize build {name}:")


def test_the_kubernetes_validate_library_really_rejects(root: Path) -> None:
    deployment = documents(root / "base/deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # a typo, caught in strict mode
    assert schema_errors(yaml.safe_dump(deployment), KUBERNETES_VERSIONS[-1]) is not None


# ---- the contract -------------------------------------------------------------------------


def test_no_secret_values_are_shipped(root: Path, overlay: list[Obj]) -> None:
    for name in KUSTOMIZATIONS:
        kinds = {obj["kind"] for obj in render(root / name)}
        assert "Secret" not in kinds, name
        assert "secretGenerator" not in kustomization(root / name), name
    referenced = set()
    for obj in overlay:
        for container in containers(obj):
            for source in container.get("envFrom", []):
                assert "secretRef" in source or "configMapRef" in source
                if "secretRef" in source:
                    referenced.add(source["secretRef"]["name"])
            for variable in container.get("env", []):
                assert "value" not in variable, f"{variable['name']}: inline value; use the ConfigMap or a Secret"
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    referenced.add(variable["valueFrom"]["secretKeyRef"]["name"])
    assert referenced == SECRET_NAMES
    readme = (root / "README.md").read_text()
    for secret in SECRET_NAMES:
        assert f"`{secret}`" in readme, f"README.md does not say how to create {secret}"


def test_probes_and_ports_are_the_http_port(project: BakedProject, overlay: list[Obj]) -> None:
    deployment = the(overlay, "Deployment", "mcp")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port(project)}

    def resolve(value: int | str) -> int:
        return ports[value] if isinstance(value, str) else value

    assert container["readinessProbe"]["httpGet"]["path"] == "/status"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"]:
        assert resolve(container[probe]["httpGet"]["port"]) == port(project), probe
    (service_port,) = the(overlay, "Service", "mcp")["spec"]["ports"]
    assert resolve(service_port["targetPort"]) == port(project)
    assert service_port["port"] == port(project)  # http://mcp:<port>, as in compose
    assert the(overlay, "Service", "mcp")["spec"]["type"] == "ClusterIP"
    config = the(overlay, "ConfigMap", "mcp-config")["data"]
    assert config["MCP_PORT"] == str(port(project))
    assert config["MCP_HOST"] == "0.0.0.0"
    policy = the(overlay, "NetworkPolicy", "mcp")["spec"]
    ingress_ports = [resolve(p["port"]) for rule in policy["ingress"] for p in rule["ports"]]
    assert ingress_ports == [port(project)]


def test_the_configmap_holds_only_contract_settings(project: BakedProject, overlay: list[Obj]) -> None:
    config = the(overlay, "ConfigMap", "mcp-config")["data"]
    allowed = set(RUNTIME_VARS) | {"UPSTREAM_BASE_URL"}
    assert set(config) <= allowed, set(config) - allowed
    assert config["MCP_AUTH_MODE"] == project.context["auth_mode"]
    assert config["MCP_TOKEN_STORE"] == project.context["token_store"]
    assert config["UPSTREAM_BASE_URL"] == project.context["upstream_base_url"]
    secrets = {"DATABASE_URL", "MCP_AUTH_ENCRYPTION_KEY", "MCP_AUDIT_KEY", "MCP_AUTH_PREVIOUS_KEYS"}
    secrets |= {
        "MCP_BEARER_TOKENS",
        "INFISICAL_CLIENT_SECRET",
        "INFISICAL_API_KEY",
        project.context["service_token_env"],
    }
    assert not set(config) & secrets
    # The example overlay's patch reached the ConfigMap.
    assert config["CF_ACCESS_TEAM_DOMAIN"].startswith("https://")


def test_every_pod_runs_restricted(overlay: list[Obj]) -> None:
    workloads = [obj for obj in overlay if obj["kind"] in {"Deployment", "Job"}]
    assert {key(obj) for obj in workloads} == {
        ("Deployment", "mcp"),
        ("Deployment", "cloudflared"),
        ("Job", "mcp-migrate"),
    }
    for obj in workloads:
        (spec,) = pod_specs(obj)
        assert spec["automountServiceAccountToken"] is False, key(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, key(obj)
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, key(obj)
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, volume
        for container in containers(obj):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert context.get("privileged", False) is False
            assert {"requests", "limits"} <= set(container["resources"]), key(obj)
    for name in ["mcp"]:
        (spec,) = pod_specs(the(overlay, "Deployment", name))
        assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["runAsGroup"] == 10001
    (job_spec,) = pod_specs(the(overlay, "Job", "mcp-migrate"))
    assert job_spec["securityContext"]["runAsUser"] == 10001  # the image's USER


def test_server_connects_as_runtime_role_and_the_job_migrates_as_owner(
    project: BakedProject, overlay: list[Obj]
) -> None:
    def database_secret(obj: Obj) -> str:
        (container,) = containers(obj)
        (url,) = [v for v in container["env"] if v["name"] == "DATABASE_URL"]
        return str(url["valueFrom"]["secretKeyRef"]["name"])

    server = the(overlay, "Deployment", "mcp")
    job = the(overlay, "Job", "mcp-migrate")
    assert database_secret(server) == "mcp-database-runtime"
    assert database_secret(job) == "mcp-database-owner"
    (migrate,) = containers(job)
    assert migrate["command"] == [project.slug, "db", "upgrade", "--runtime-role", RUNTIME_ROLE]
    (serve,) = containers(server)
    assert "command" not in serve and "args" not in serve  # the image's CMD: `<slug> serve`
    assert migrate["image"] == serve["image"] == f"registry.example.com/{project.slug}:0.1.0"
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    # Owner credentials reach nothing but the Job.
    for obj in overlay:
        text = yaml.safe_dump(obj)
        assert ("mcp-database-owner" in text) == (key(obj) == ("Job", "mcp-migrate")), key(obj)


def test_the_server_is_highly_available(overlay: list[Obj]) -> None:
    deployment = the(overlay, "Deployment", "mcp")
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    pdb = the(overlay, "PodDisruptionBudget", "mcp")["spec"]
    assert pdb["minAvailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    job_labels = the(overlay, "Job", "mcp-migrate")["spec"]["template"]["metadata"]["labels"]
    assert not pdb["selector"]["matchLabels"].items() <= job_labels.items(), "the PDB must not count the Job's pod"
    hpa = the(overlay, "HorizontalPodAutoscaler", "mcp")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mcp"}
    assert hpa["spec"]["minReplicas"] == 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    service = the(overlay, "Service", "mcp")
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_network_policies_allow_only_what_is_needed(overlay: list[Obj]) -> None:
    def egress_ports(name: str) -> set[tuple[str, int | str]]:
        rules = the(overlay, "NetworkPolicy", name)["spec"]["egress"]
        return {(p["protocol"], p["port"]) for rule in rules for p in rule["ports"]}

    dns = {("UDP", 53), ("TCP", 53)}
    assert egress_ports("mcp") == dns | {("TCP", 5432), ("TCP", 443)}
    assert egress_ports("mcp-migrate") == dns | {("TCP", 5432)}
    for name in ["mcp", "mcp-migrate", "cloudflared"]:
        assert set(the(overlay, "NetworkPolicy", name)["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in the(overlay, "NetworkPolicy", "mcp-migrate")["spec"]
    # DNS only to kube-dns, not anywhere on port 53.
    for name in ["mcp", "mcp-migrate", "cloudflared"]:
        for rule in the(overlay, "NetworkPolicy", name)["spec"]["egress"]:
            if any(p["port"] == 53 for p in rule["ports"]):
                assert rule["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    # Each policy selects the pods it is about.
    for kind, name, policy in [("Deployment", "mcp", "mcp"), ("Job", "mcp-migrate", "mcp-migrate")]:
        labels = the(overlay, kind, name)["spec"]["template"]["metadata"]["labels"]
        selector = the(overlay, "NetworkPolicy", policy)["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= labels.items(), policy


def test_cloudflared_is_an_optional_component(root: Path, overlay: list[Obj]) -> None:
    base = render(root / "base")
    assert not any("cloudflared" in yaml.safe_dump(obj) for obj in base)
    assert kustomization(root / "components/cloudflared")["kind"] == "Component"
    cloudflared = the(overlay, "Deployment", "cloudflared")
    (container,) = containers(cloudflared)
    (token,) = container["env"]
    assert token["name"] == "TUNNEL_TOKEN"
    assert token["valueFrom"]["secretKeyRef"] == {"name": "cloudflared-tunnel", "key": "TUNNEL_TOKEN"}
    compose = (root.parent.parent / "docker-compose.yml").read_text()
    image = re.search(r"image: (cloudflare/cloudflared:\S+)", compose)
    assert image and container["image"] == image.group(1), "the same cloudflared as compose"


def test_overlay_sets_namespace_and_pod_security(project: BakedProject, overlay: list[Obj]) -> None:
    namespace = the(overlay, "Namespace", project.slug)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in overlay:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == project.slug, key(obj)
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == project.slug, key(obj)
