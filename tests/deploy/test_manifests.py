"""Deployment artifacts: Kubernetes (base, production overlay, sidecar), the Helm chart, docker-compose
and the Dockerfile.

Kubernetes manifests are built the way kustomize builds them (a small renderer below: resources,
generators, strategic-merge patches, namespace, images, replicas, labels; checked against
`kubectl kustomize` when kubectl is on PATH), validated against the Kubernetes JSON schemas
(kubernetes-validate, strict, offline), then checked against veil itself: every veil.yaml parses with
veil.config, the ports, mounts and secrets it names exist in the pod. No Docker engine, no cluster.
"""

from __future__ import annotations

import copy
import functools
import http.server
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from veil.config import Config, parse_config
from veil.keys import KeyError_, load_secret

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
HELM = DEPLOY / "helm" / "veil"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"

K8S_VERSION = "1.30"  # validated offline against kubernetes-validate's bundled schemas
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "production": K8S / "overlays" / "production",
    "sidecar": K8S / "sidecar",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
ENTRYPOINT = ["veil", "serve", "--config", "/etc/veil/veil.yaml"]
VEIL_UID = 10001

Doc = dict[str, Any]


# --- loading ------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files() -> list[Path]:
    templates = HELM / "templates"
    files = sorted(p for ext in ("*.yaml", "*.yml") for p in DEPLOY.rglob(ext))
    return [p for p in files if templates not in p.parents]  # Go templates are not YAML


def ident(doc: Doc) -> tuple[str, str, str]:
    meta = doc["metadata"]
    return doc["kind"], meta.get("namespace", ""), meta["name"]


# --- a small kustomize --------------------------------------------------------------------------


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge, as far as our patches need it: maps merge, lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        for key, value in patch.items():
            base[key] = merge(base[key], value) if key in base else value
        return base
    named = isinstance(base, list) and isinstance(patch, list)
    named = named and all(isinstance(x, dict) and "name" in x for x in [*base, *patch])
    if named:
        by_name = {item["name"]: item for item in base}
        for item in patch:
            if item["name"] in by_name:
                merge(by_name[item["name"]], item)
            else:
                base.append(item)
        return base
    return patch


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def containers_of(doc: Doc) -> list[Doc]:
    if doc["kind"] not in POD_OWNERS:
        return []
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def build(kdir: Path) -> list[Doc]:
    k = load_docs(kdir / "kustomization.yaml")[0]
    docs: list[Doc] = []
    for resource in k.get("resources", []):
        path = kdir / resource
        docs += build(path) if path.is_dir() else load_docs(path)
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (kdir / f).read_text(encoding="utf-8") for f in gen.get("files", [])}
        data.update(lit.split("=", 1) for lit in gen.get("literals", []))
        existing = find(docs, "ConfigMap", gen["name"])
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            assert existing is None, f"{kdir}: generator {gen['name']} exists already"
            meta = {"name": gen["name"]}
            docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
        else:
            assert existing is not None, f"{kdir}: generator {gen['name']} has nothing to {behavior}"
            existing["data"] = data if behavior == "replace" else {**existing.get("data", {}), **data}
    for entry in k.get("patches", []):
        patch = load_docs(kdir / entry["path"])[0]
        target = find(docs, patch["kind"], patch["metadata"]["name"])
        assert target is not None, f"{kdir}: patch {entry['path']} matches no resource"
        if patch.get("$patch") == "delete":
            docs.remove(target)
        else:
            merge(target, patch)
    for doc in docs:
        if "namespace" in k and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = k["namespace"]
        for entry in k.get("labels", []):
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
        for image in k.get("images", []):
            for c in containers_of(doc):
                name = re.split(r"[:@]", c["image"].rsplit("/", 1)[-1])[0]
                if c["image"].split(":")[0] == image["name"] or name == image["name"]:
                    tag = image.get("newTag", "latest")
                    c["image"] = f"{image.get('newName', image['name'])}:{tag}"
        for r in k.get("replicas", []):
            if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"] == r["name"]:
                doc["spec"]["replicas"] = r["count"]
    return docs


@functools.cache
def _rendered(name: str) -> list[Doc]:
    return build(KUSTOMIZATIONS[name])


def rendered(name: str) -> list[Doc]:
    return copy.deepcopy(_rendered(name))


def all_rendered() -> Iterator[tuple[str, Doc]]:
    for name in KUSTOMIZATIONS:
        for doc in rendered(name):
            yield name, doc


# --- veil in a pod ------------------------------------------------------------------------------


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"]["template"]["spec"]
    return spec


def veil_pods() -> list[Any]:
    """pytest params (kustomization, workload, veil container) for every workload that runs veil."""
    return [
        pytest.param(name, doc, c, id=f"{name}-{doc['metadata']['name']}")
        for name, doc in all_rendered()
        for c in containers_of(doc)
        if c["name"] == "veil"
    ]


def mounts(doc: Doc, container: Doc) -> dict[str, Doc]:
    """mountPath -> {mount, volume} for one container."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        assert m["name"] in volumes, f"{container['name']}: no volume {m['name']}"
        out[m["mountPath"]] = {"mount": m, "volume": volumes[m["name"]]}
    return out


def veil_config(docs: list[Doc], workload: Doc, container: Doc) -> tuple[Config, dict[str, Any]]:
    config_mount = mounts(workload, container)["/etc/veil"]
    cm_name = config_mount["volume"]["configMap"]["name"]
    cm = find(docs, "ConfigMap", cm_name)
    assert cm is not None, f"ConfigMap {cm_name} is not part of the build"
    raw = yaml.safe_load(cm["data"]["veil.yaml"])
    return parse_config(raw, file=f"{cm_name}/veil.yaml", base=Path("/etc/veil")), raw


def env_refs(raw: dict[str, Any]) -> set[str]:
    refs: set[str] = set()
    for section in (raw.get("keys", {}), raw.get("admin", {}).get("tokens", {})):
        for spec in section.values():
            specs = [spec] if isinstance(spec, str) else [e["secret"] for e in spec]
            refs.update(s[4:] for s in specs if s.startswith("env:"))
    return refs


def ports_by_name(container: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# === every YAML file ============================================================================


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert load_docs(path), f"{path} is empty"


# === Kubernetes =================================================================================


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_kustomization_references_exist(name: str) -> None:
    kdir = KUSTOMIZATIONS[name]
    k = load_docs(kdir / "kustomization.yaml")[0]
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    paths = [*k.get("resources", []), *(p["path"] for p in k.get("patches", []))]
    paths += [f for g in k.get("configMapGenerator", []) for f in g.get("files", [])]
    for ref in paths:
        target = kdir / ref
        assert target.exists(), f"{kdir}/kustomization.yaml names {ref}, which does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{ref} has no kustomization.yaml"
    listed = {(kdir / r).resolve() for r in k.get("resources", [])}
    listed |= {(kdir / p["path"]).resolve() for p in k.get("patches", [])}
    manifests = {p.resolve() for p in kdir.rglob("*.yaml") if p.name != "kustomization.yaml"}
    generated = {(kdir / f).resolve() for g in k.get("configMapGenerator", []) for f in g.get("files", [])}
    orphans = sorted(str(p.relative_to(kdir)) for p in manifests - listed - generated)
    assert not orphans, f"files in {kdir} that the kustomization does not use: {orphans}"


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_build_has_unique_resources(name: str) -> None:
    ids = [ident(d) for d in rendered(name)]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize(
    ("name", "index"),
    [(name, i) for name in KUSTOMIZATIONS for i in range(len(_rendered(name)))],
    ids=lambda v: str(v),
)
def test_manifest_is_valid_kubernetes(name: str, index: int) -> None:
    doc = rendered(name)[index]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{name} {ident(doc)}: {path}: {exc.message}")


def test_schema_validation_catches_mistakes() -> None:
    doc = rendered("base")
    deployment = find(doc, "Deployment", "veil")
    assert deployment is not None
    pod_spec(deployment)["containers"][0]["livenessProbe"]["httpGet"]["path_"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH")
    out = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr

    def normal(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [normal(v) for v in value]
            if all(isinstance(v, dict) and "name" in v for v in items):
                items.sort(key=lambda v: str(v["name"]))
            return items
        return value

    theirs = {ident(d): normal(d) for d in yaml.safe_load_all(out.stdout) if d}
    ours = {ident(d): normal(d) for d in rendered(name)}
    assert sorted(ours) == sorted(theirs)
    for key, doc in ours.items():
        assert doc == theirs[key], key


def test_every_kustomization_runs_veil() -> None:
    assert {p.values[0] for p in veil_pods()} == set(KUSTOMIZATIONS)


@pytest.mark.parametrize(("name", "workload", "container"), veil_pods())
def test_veil_yaml_matches_the_pod(name: str, workload: Doc, container: Doc) -> None:
    docs = rendered(name)
    config, raw = veil_config(docs, workload, container)
    ports = ports_by_name(container)
    assert config.proxy.port == ports["http"] and config.admin.port == ports["admin"]
    assert config.proxy.host == config.admin.host == "0.0.0.0"  # reachable from the kubelet and Prometheus
    assert config.mode == "enforce"

    pod_mounts = mounts(workload, container)
    for policy_path in config.policy_paths:
        m = pod_mounts.get(policy_path)
        assert m is not None, f"policy.paths {policy_path} is not mounted"
        assert "configMap" in m["volume"], "policies come from a ConfigMap"
        assert "subPath" not in m["mount"], "a subPath mount never sees ConfigMap updates (no hot reload)"
    assert config.policy_watch

    writable = [
        p for p, m in pod_mounts.items() if "emptyDir" in m["volume"] and not m["mount"].get("readOnly")
    ]
    assert any(under(config.audit_path, p) for p in writable), "the decision log needs a writable volume"

    replicas = workload["spec"].get("replicas", 1)
    if replicas > 1 or find(docs, "HorizontalPodAutoscaler", workload["metadata"]["name"]):
        assert config.consent_url.startswith("postgresql://"), "SQLite is for a single replica only"

    provided = {e["name"] for e in container.get("env", [])}
    secret_refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
    assert secret_refs, "keys and admin tokens come from a Secret"
    for secret_name in secret_refs:
        secret = find(docs, "Secret", secret_name)
        if secret is not None:
            provided |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
        else:
            assert name == "production", f"Secret {secret_name} is neither built nor created out of band"
            provided |= env_refs(raw)  # created out of band: see overlays/production/kustomization.yaml
    missing = env_refs(raw) - provided
    assert not missing, f"veil.yaml references env vars nothing provides: {sorted(missing)}"
    assert set(config.keys) == {"store", "audit", "pseudonym", "hash"}
    assert set(config.admin_tokens) == {"read", "consent", "audit", "reload"}
    if config.consent_url.startswith("postgresql://"):
        assert urlsplit(config.consent_url).password is None, "the password comes from a Secret (PGPASSWORD)"
        assert "PGPASSWORD" in provided


@pytest.mark.parametrize(("name", "workload", "container"), veil_pods())
def test_veil_runs_hardened(name: str, workload: Doc, container: Doc) -> None:
    pod = pod_spec(workload)
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == VEIL_UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), c["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{c['name']}: resources.{kind}"
    # Read-only root: the writable paths are volumes, PROMETHEUS_MULTIPROC_DIR among them.
    pod_mounts = mounts(workload, container)
    for path in ("/tmp", "/var/lib/veil"):
        assert "emptyDir" in pod_mounts[path]["volume"], path
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]
    assert under(multiproc, "/tmp")
    assert "emptyDir" in pod_mounts[multiproc]["volume"], "the multiprocess dir must exist before start"


@pytest.mark.parametrize(("name", "workload", "container"), veil_pods())
def test_probes_and_graceful_drain(name: str, workload: Doc, container: Doc) -> None:
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + 15, "time to drain after the preStop sleep"


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_services_autoscaling_and_budgets_find_their_pods(name: str) -> None:
    docs = rendered(name)
    workloads = [d for d in docs if d["kind"] in POD_OWNERS]

    def selects(selector: dict[str, str], workload: Doc) -> bool:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        return all(labels.get(k) == v for k, v in selector.items())

    for d in workloads:
        assert selects(d["spec"]["selector"]["matchLabels"], d), f"{ident(d)}: selector misses its template"
    for svc in (d for d in docs if d["kind"] == "Service"):
        targets = [w for w in workloads if selects(svc["spec"]["selector"], w)]
        assert targets, f"Service {svc['metadata']['name']} selects no pods"
        for port in svc["spec"]["ports"]:
            names = {p for w in targets for c in containers_of(w) for p in ports_by_name(c)}
            assert port["targetPort"] in names, f"{ident(svc)}: no container port {port['targetPort']}"
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert find(docs, ref["kind"], ref["name"]) is not None
        assert hpa["spec"]["minReplicas"] >= 2
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"]["matchLabels"], w) for w in workloads)
        scaler = find(docs, "HorizontalPodAutoscaler", pdb["metadata"]["name"])
        floor = scaler["spec"]["minReplicas"] if scaler else 1
        assert pdb["spec"]["minAvailable"] < floor, "a PDB as large as the floor blocks every drain"
    for netpol in (d for d in docs if d["kind"] == "NetworkPolicy"):
        matched = [w for w in workloads if selects(netpol["spec"]["podSelector"]["matchLabels"], w)]
        assert matched, f"NetworkPolicy {netpol['metadata']['name']} selects no pods"
        names = {p for w in matched for c in containers_of(w) for p in ports_by_name(c)}
        for rule in netpol["spec"].get("ingress", []):
            for port in rule["ports"]:
                assert port["port"] in names
        assert {r["ports"][0]["port"] for r in netpol["spec"].get("ingress", [])} <= {"http", "admin"}


def test_admin_is_cluster_internal_and_fenced() -> None:
    docs = rendered("base")
    admin = find(docs, "Service", "veil-admin")
    assert admin is not None and admin["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]
    proxy = find(docs, "Service", "veil")
    assert proxy is not None and [p["targetPort"] for p in proxy["spec"]["ports"]] == ["http"]
    netpol = find(docs, "NetworkPolicy", "veil")
    assert netpol is not None and set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    admin_rule = next(r for r in netpol["spec"]["ingress"] if r["ports"][0]["port"] == "admin")
    sources = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in admin_rule["from"]]
    assert {"kubernetes.io/metadata.name": "monitoring"} in sources
    egress = [p for r in netpol["spec"]["egress"] for p in r.get("ports", [])]
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for p in egress}
    assert {(53, "UDP"), (53, "TCP"), (5432, "TCP")} <= egress_ports


def test_sidecar_fronts_the_legacy_container_on_loopback() -> None:
    docs = rendered("sidecar")
    workload = find(docs, "Deployment", "profiles")
    assert workload is not None
    containers = {c["name"]: c for c in containers_of(workload)}
    assert set(containers) == {"profiles", "veil"}
    config, _ = veil_config(docs, workload, containers["veil"])
    assert [u.url for u in config.upstreams] == ["http://127.0.0.1:9000"]
    assert "ports" not in containers["profiles"], "the legacy port is not part of the pod's interface"
    assert "127.0.0.1" in containers["profiles"]["command"]
    service = find(docs, "Service", "profiles")
    assert service is not None and service["spec"]["ports"][0]["targetPort"] == "http"  # veil's port


def test_production_overlay_changes_what_it_should() -> None:
    base, prod = rendered("base"), rendered("production")
    assert find(prod, "Secret", "veil-secrets") is None, "production never applies placeholder secrets"
    deployment = find(prod, "Deployment", "veil")
    assert deployment is not None and deployment["spec"]["replicas"] >= 3
    veil = containers_of(deployment)[0]
    assert not veil["image"].endswith(":latest") and "/" in veil["image"]
    env = {e["name"]: e for e in veil["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "veil-postgres"
    config, _ = veil_config(prod, deployment, veil)
    assert config.consent_url.startswith("postgresql://") and "sslmode=verify-full" in config.consent_url
    base_deployment = find(base, "Deployment", "veil")
    assert base_deployment is not None
    base_veil = containers_of(base_deployment)[0]
    assert veil["resources"] != base_veil["resources"]
    assert config.workers >= 2 and float(veil["resources"]["limits"]["cpu"]) >= config.workers


@pytest.mark.parametrize("name", ["base", "sidecar"])
def test_placeholder_secrets_fail_closed(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = [d for d in rendered(name) if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        for key, value in secret["stringData"].items():
            if not key.startswith("VEIL_"):
                continue
            monkeypatch.setenv(key, value)
            with pytest.raises(KeyError_, match="too short"):
                load_secret(f"env:{key}", what=key)


def test_example_policies_are_the_same_everywhere() -> None:
    base = find(rendered("base"), "ConfigMap", "veil-policies")
    sidecar = find(rendered("sidecar"), "ConfigMap", "profiles-veil-policies")
    values = load_docs(HELM / "values.yaml")[0]
    assert base is not None and sidecar is not None
    assert base["data"] == sidecar["data"] == values["policies"]
    assert all(name.endswith(".veil") for name in base["data"])


def test_example_policies_compile_from_a_configmap_volume(tmp_path: Path) -> None:
    """The example policy compiles, laid out the way the kubelet mounts a ConfigMap: the files are
    symlinks into `..data`, itself a symlink to a timestamped directory."""
    if importlib.util.find_spec("veil.policy.load") is None:
        pytest.skip("the policy loader is not built yet")
    from veil.policy.load import load_policy

    base = find(rendered("base"), "ConfigMap", "veil-policies")
    assert base is not None
    stamped = tmp_path / "..2026_01_01_00_00_00.000000001"
    stamped.mkdir()
    (tmp_path / "..data").symlink_to(stamped.name)
    for file_name, text in base["data"].items():
        (stamped / file_name).write_text(text, encoding="utf-8")
        (tmp_path / file_name).symlink_to(f"..data/{file_name}")
    policy = load_policy([tmp_path])
    assert policy.version


# === Helm =======================================================================================


def helm_values() -> dict[str, Any]:
    values: dict[str, Any] = load_docs(HELM / "values.yaml")[0]
    return values


def test_helm_chart_metadata() -> None:
    chart = load_docs(HELM / "Chart.yaml")[0]
    assert chart["apiVersion"] == "v2" and chart["name"] == "veil" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    from veil import __version__

    assert chart["appVersion"] == __version__


@pytest.mark.parametrize("template", sorted((HELM / "templates").iterdir()), ids=lambda p: p.name)
def test_helm_template_references_exist(template: Path) -> None:
    text = template.read_text(encoding="utf-8")
    values = helm_values()
    for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
        node: Any = values
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"{template.name}: .Values.{ref} is not defined"
            node = node[part]
    defined = set(re.findall(r'define\s+"([^"]+)"', (HELM / "templates" / "_helpers.tpl").read_text()))
    for name in re.findall(r'include\s+"([^"]+)"', text):
        assert name in defined, f"{template.name}: include {name!r} is not defined"
    for path in re.findall(r'print \$\.Template\.BasePath "/([^"]+)"', text):
        assert (HELM / "templates" / path).is_file()
    actions = re.findall(r"\{\{-?\s*(\w+)", text)
    opened = sum(a in ("if", "range", "with", "define") for a in actions)
    assert opened == actions.count("end"), f"{template.name}: unbalanced if/range/with/define and end"
    assert text.count("{{") == text.count("}}")


def test_helm_values_config_is_a_valid_veil_yaml() -> None:
    values = helm_values()
    raw = {
        "listen": {name: f"0.0.0.0:{port}" for name, port in values["ports"].items()},
        **values["config"],
    }
    config = parse_config(raw, file="values.yaml:config", base=Path("/etc/veil"))
    assert config.policy_paths == ("/etc/veil-policies",)
    assert config.consent_url.startswith("postgresql://")  # replicaCount 2 / autoscaling
    deployment = (HELM / "templates" / "deployment.yaml").read_text(encoding="utf-8")
    assert "mountPath: /etc/veil-policies" in deployment and "subPath" not in deployment


def test_helm_template_renders_valid_kubernetes() -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm not on PATH")
    out = subprocess.run(
        [helm, "template", "veil", str(HELM)], capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["kind"] for d in docs} >= {
        "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# === docker-compose =============================================================================


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_docs(COMPOSE)[0]
    return data


def compose_veil_config() -> tuple[Config, dict[str, Any]]:
    veil = compose()["services"]["veil"]
    source = next(v.split(":")[0] for v in veil["volumes"] if v.split(":")[1] == "/etc/veil/veil.yaml")
    path = DEPLOY / source
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return parse_config(raw, file=str(path), base=Path("/etc/veil")), raw


def test_compose_services_and_bind_mounts() -> None:
    services = compose()["services"]
    assert {"veil", "postgres", "upstream", "prometheus", "grafana"} <= set(services)
    assert services["grafana"].get("profiles") == ["grafana"], "Grafana is optional"
    named = set(compose().get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: undeclared volume {source}"
    build = services["veil-keys"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    veil = services["veil"]
    assert veil["read_only"] is True and veil["cap_drop"] == ["ALL"]
    assert "../prometheus" not in str(services["prometheus"]) and "./prometheus:/etc/prometheus:ro" in (
        services["prometheus"]["volumes"]
    )


def test_compose_veil_yaml_matches_the_services() -> None:
    config, _ = compose_veil_config()
    services = compose()["services"]
    veil = services["veil"]
    published = {int(p.rsplit(":", 2)[-1]) for p in veil["ports"]}
    assert {config.proxy.port, config.admin.port} == published
    assert all(p.startswith("127.0.0.1:") for p in veil["ports"]), "a trial listens on loopback only"
    upstream_host = config.upstreams[0].url.split("//")[1].split(":")[0]
    assert upstream_host in services
    assert "--host" in services[upstream_host]["entrypoint"]
    assert config.consent_url.split("@")[1].split(":")[0] in services  # postgresql://veil@postgres:5432
    mounted = [v.split(":")[1] for v in veil["volumes"]]
    assert all(any(under(p, m) for m in mounted) for p in config.policy_paths)
    assert any(under(config.audit_path, m) for m in mounted)
    tmpfs = [t.split(":")[0] for t in veil["tmpfs"]]
    assert veil["environment"]["PROMETHEUS_MULTIPROC_DIR"] in tmpfs
    scrape = load_docs(DEPLOY / "prometheus" / "prometheus.yml")[0]["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"veil:{config.admin.port}"]


def test_compose_keys_are_generated_and_accepted_by_veil(tmp_path: Path) -> None:
    """Run the key generator for real; every file: key in the compose veil.yaml then loads."""
    config, raw = compose_veil_config()
    script = DEPLOY / "compose" / "make-keys.py"
    command = [sys.executable, str(script), str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    specs = [*raw["keys"].values(), *raw["admin"]["tokens"].values()]
    assert specs and all(s.startswith("file:/var/lib/veil/keys/") for s in specs)
    for spec in specs:
        local = tmp_path / Path(spec[len("file:"):]).name
        assert len(load_secret(f"file:{local}")) == 32
        assert local.read_text().strip() not in out.stdout, "the generator never prints key material"
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "created" not in again.stdout, "existing keys are never replaced"
    for service in ("veil-keys", "veil"):
        assert "veil-data:/var/lib/veil" in compose()["services"][service]["volumes"]
    assert set(config.keys) == {"store", "audit", "pseudonym", "hash"}


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("docker compose not available")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


# === Dockerfile =================================================================================


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last:]


def test_dockerfile_is_multi_stage_on_python_slim() -> None:
    steps = dockerfile()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) >= 2 and " AS " in froms[0].upper()
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    image = final_stage()[0][1].split()[0]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
    assert image == "python:3.11-slim"
    assert not any(word == "ADD" for word, _ in steps), "COPY, not ADD"
    runtime_copies = [a for word, a in final_stage() if word == "COPY"]
    assert all("--from=" in a for a in runtime_copies), "no source tree in the runtime image"


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "USER is required"
    uid, _, gid = users[-1].partition(":")
    assert uid == str(VEIL_UID) and gid in ("", str(VEIL_UID)), "numeric, so runAsNonRoot can verify it"


def test_dockerfile_interface() -> None:
    stage = final_stage()
    exposed = {p for word, args in stage if word == "EXPOSE" for p in args.split()}
    assert exposed == {"8080", "8081"}
    entry = [args for word, args in stage if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ENTRYPOINT
    env = " ".join(args for word, args in stage if word == "ENV")
    multiproc = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", env)
    assert multiproc and under(multiproc.group(1), "/tmp")
    assert not re.search(r"(KEY|TOKEN|PASSWORD|SECRET)\w*=", env), "no secrets baked into the image"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "grammar" in text and "policies" in text, "the wheel ships the grammar and example policies"


def test_dockerfile_copies_exist_in_the_build_context() -> None:
    for word, args in dockerfile():
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository (docker build would fail)"


def test_dockerfile_healthcheck_probes_admin_healthz() -> None:
    checks = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    instructions = " ".join(args for _, args in dockerfile())
    assert "curl" not in instructions and "wget" not in instructions, "slim images have neither"
    cmd = json.loads(checks[0].split("CMD", 1)[1])
    assert cmd[0] == "python"
    env = " ".join(args for word, args in final_stage() if word == "ENV")
    assert "VEIL_HEALTHCHECK_URL=http://127.0.0.1:8081/healthz" in env


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_works(status: int, healthy: bool) -> None:
    """Run the HEALTHCHECK command against a real socket: 200 → exit 0, 503 → non-zero."""
    checks = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    cmd = json.loads(checks[0].split("CMD", 1)[1])
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        out = subprocess.run(
            [sys.executable, *cmd[1:]], env={"VEIL_HEALTHCHECK_URL": url}, capture_output=True, timeout=10,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (out.returncode == 0) is healthy, out.stderr
