"""The deployment files (deploy/) agree with the gateway itself.

Probes hit routes the gateway really serves, the grace period covers the configured drain, the
container runs `gateway serve` (parsed by the gateway's own command line) on the mounted config,
selectors select the pods, autoscalers target the Deployment below max_calls, secrets hold
placeholders only, the image runs as a user other than root, the Container Apps template says
the same things, and the alert rules in docs/operations.md use metrics the gateway exports.

Each check is a function that returns the problems it finds. Every check runs on the shipped
files (no problem expected), and on copies broken on purpose, one breakage at a time (the problem
must be found): a check that cannot fail fails the test.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import create_app
from gateway.cli import build_parser
from gateway.config import ConfigError, parse_config
from gateway.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BICEP = DEPLOY / "azure" / "containerapp.bicep"

INTERNAL_ROUTES = ("/healthz", "/readyz", "/metrics")  # never published by an ingress
EXIT_MARGIN_S = 10  # after the drain: time to close sockets and exit before SIGKILL
PLACEHOLDER = "https://placeholder.invalid"  # a value every setting accepts (URLs, secrets, text)...
# ... but keys the carriers read in a format of their own
_KEY_BYTES = bytes(range(32))
FORMATTED = {
    "TELNYX_PUBLIC_KEY": base64.b64encode(Ed25519PrivateKey.from_private_bytes(_KEY_BYTES).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)).decode(),
    "GENESYS_CLIENT_SECRET": base64.b64encode(_KEY_BYTES).decode(),
}


def placeholders(names: Any) -> dict[str, str]:
    """A value for each variable that its setting accepts."""
    return {name: FORMATTED.get(name, PLACEHOLDER) for name in names}
_ANY_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


# --------------------------------------------------------------------------------------------
# What the checks look at


@dataclass
class Bundle:
    manifests: dict[str, list[dict[str, Any]]]  # file name under deploy/kubernetes -> its documents
    dockerfile: str
    dockerignore: str  # deploy/Dockerfile.dockerignore
    bicep: str
    aca_config: str  # the file the template loads with loadTextContent
    routes: frozenset[tuple[str, str]]  # (method, path) served by the gateway

    def docs(self, kind: str) -> list[dict[str, Any]]:
        return [doc for docs in self.manifests.values() for doc in docs if doc.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.docs(kind)
        assert len(found) == 1, f"expected one {kind} under deploy/kubernetes, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["spec"]["containers"]
        return next((c for c in containers if c.get("name") == "gateway"), containers[0])

    @property
    def config_map(self) -> dict[str, Any]:
        """The ConfigMap that holds config.yaml."""
        found = [cm for cm in self.docs("ConfigMap") if "config.yaml" in (cm.get("data") or {})]
        assert len(found) == 1, f"expected one ConfigMap with a config.yaml key, found {len(found)}"
        return found[0]

    @property
    def config_text(self) -> str:
        return self.config_map["data"]["config.yaml"]

    @property
    def secret_example(self) -> dict[str, Any]:
        (secret,) = self.manifests["secret.example.yaml"]
        return secret


def _load_manifests() -> dict[str, list[dict[str, Any]]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
        out[path.name] = docs
    return out


def _gateway_routes() -> frozenset[tuple[str, str]]:
    app = create_app(parse_config("profiles: {main: {model: gpt-realtime}}", env={}))
    return frozenset((route.method, route.resource.canonical) for route in app.router.routes()
                     if route.resource is not None)


def _aca_config_path(bicep: str) -> Path | None:
    match = re.search(r"loadTextContent\('([^']+)'\)", bicep)
    return BICEP.parent / match.group(1) if match else None


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    bicep = BICEP.read_text(encoding="utf-8")
    config_path = _aca_config_path(bicep)
    return Bundle(
        manifests=_load_manifests(),
        dockerfile=(DEPLOY / "Dockerfile").read_text(encoding="utf-8"),
        dockerignore=(DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8"),
        bicep=bicep,
        aca_config=config_path.read_text(encoding="utf-8") if config_path and config_path.is_file() else "",
        routes=_gateway_routes(),
    )


@pytest.fixture
def bundle(shipped: Bundle) -> Bundle:
    return copy.deepcopy(shipped)


# --------------------------------------------------------------------------------------------
# Reading manifests, the Dockerfile and the command line


def _placeholder_env(config_text: str) -> dict[str, str]:
    """A value for every variable the config names (with or without a default)."""
    return placeholders(_ANY_REF.findall(config_text))


def _required_vars(config_text: str) -> set[str]:
    """The variables the config cannot do without, as the gateway itself reports them."""
    try:
        parse_config(config_text, env={})
    except ConfigError as exc:
        return set(re.findall(r"environment variable (\w+) is not set", str(exc)))
    return set()


def _parse(config_text: str, source: str) -> Any:
    return parse_config(config_text, source=source, env=_placeholder_env(config_text))


def _container_port(container: dict[str, Any], port: Any) -> int | None:
    """A probe's or annotation's port (number or name) as a number, if the container declares it."""
    for declared in container.get("ports") or []:
        if port in (declared.get("containerPort"), declared.get("name"), str(declared.get("containerPort"))):
            return int(declared["containerPort"])
    return None


def _prestop_sleep_s(container: dict[str, Any]) -> int | None:
    hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = " ".join((hook.get("exec") or {}).get("command") or [])
    match = re.search(r"\bsleep\s+(\d+)\b", command)
    return int(match.group(1)) if match else None


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    match_labels = (selector or {}).get("matchLabels", selector) or {}
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def _serve_options(argv: list[str]) -> tuple[Any, str | None]:
    """Parse a container's command line with the gateway's own parser: (options, problem)."""
    if not argv:
        return None, "no command"
    if PurePosixPath(argv[0]).name == "gateway":
        rest = argv[1:]
    elif PurePosixPath(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "gateway"]:
        rest = argv[3:]
    else:
        return None, f"the command is not `gateway ...`: {argv}"
    try:
        options = build_parser().parse_args(rest)
    except SystemExit:
        return None, f"`gateway` rejects these arguments: {rest}"
    if options.command != "serve":
        return None, f"the command runs `gateway {options.command}`, not `gateway serve`"
    return options, None


def _http_get_routes(bundle: Bundle) -> set[str]:
    return {path for method, path in bundle.routes if method == "GET"}


# Dockerfile -----------------------------------------------------------------------------------


def _dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions per stage (continuation lines joined, comments dropped); stage 0 holds what
    comes before the first FROM."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending)
    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical:
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, rest.strip()))
    return stages


def _exec_form(value: str) -> list[str]:
    if value.startswith("["):
        return [str(part) for part in json.loads(value)]
    return ["/bin/sh", "-c", value]


def _final_stage(text: str) -> list[tuple[str, str]]:
    return _dockerfile_stages(text)[-1]


def _last(stage: list[tuple[str, str]], instruction: str) -> str | None:
    values = [rest for name, rest in stage if name == instruction]
    return values[-1] if values else None


def _image_argv(dockerfile: str) -> tuple[list[str], list[str]]:
    stage = _final_stage(dockerfile)
    entrypoint, cmd = _last(stage, "ENTRYPOINT"), _last(stage, "CMD")
    return (_exec_form(entrypoint) if entrypoint else [], _exec_form(cmd) if cmd else [])


def _effective_argv(container: dict[str, Any], dockerfile: str) -> list[str]:
    """What the container runs, with Kubernetes' rules for command/args over ENTRYPOINT/CMD."""
    entrypoint, cmd = _image_argv(dockerfile)
    if "command" in container:
        return list(container["command"]) + list(container.get("args") or [])
    return entrypoint + list(container["args"] if "args" in container else cmd)


def _from_images(dockerfile: str) -> list[str]:
    """Each stage's base image, with the global ARG defaults substituted."""
    stages = _dockerfile_stages(dockerfile)
    args = {}
    for name, rest in stages[0]:
        if name == "ARG":
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
    images = []
    for stage in stages[1:]:
        image = stage[0][1].split()[0]
        images.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), image))
    return images


def _image_user(dockerfile: str) -> str | None:
    user = _last(_final_stage(dockerfile), "USER")
    return user.split(":")[0].strip() if user else None


# Bicep, read as text (no Bicep compiler needed) ----------------------------------------------


def _strip_bicep_comments(text: str) -> str:
    text = re.sub(r"(?m)^\s*//.*$", "", text)
    return re.sub(r"\s//\s.*$", "", text, flags=re.MULTILINE)


def _bracketed(text: str, start: int) -> str:
    """The text from the bracket at ``start`` to its match, skipping quoted strings."""
    pairs = {"[": "]", "{": "}"}
    stack: list[str] = []
    i, quoted = start, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == "'":
                quoted = False
        elif ch == "'":
            quoted = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return text[start : i + 1]
        i += 1
    raise ValueError("unbalanced brackets")


def _top_level_objects(array_text: str) -> Iterator[str]:
    i = 1
    while True:
        i = array_text.find("{", i)
        if i < 0:
            return
        obj = _bracketed(array_text, i)
        yield obj
        i += len(obj)


def _bicep_probes(text: str) -> list[dict[str, str]]:
    text = _strip_bicep_comments(text)
    match = re.search(r"\bprobes:\s*\[", text)
    if not match:
        return []
    probes = []
    for obj in _top_level_objects(_bracketed(text, match.end() - 1)):
        fields = {}
        for key in ("type", "path"):
            found = re.search(rf"\b{key}:\s*'([^']*)'", obj)
            if found:
                fields[key] = found.group(1)
        port = re.search(r"\bport:\s*(\d+)", obj)
        if port:
            fields["port"] = port.group(1)
        probes.append(fields)
    return probes


def _bicep_string_array(text: str, key: str) -> list[str]:
    text = _strip_bicep_comments(text)
    match = re.search(rf"\b{key}:\s*\[", text)
    return re.findall(r"'([^']*)'", _bracketed(text, match.end() - 1)) if match else []


def _bicep_ints(text: str, key: str) -> list[int]:
    return [int(v) for v in re.findall(rf"\b{key}:\s*(\d+)", _strip_bicep_comments(text))]


# --------------------------------------------------------------------------------------------
# Checks: each returns the problems it finds


def check_probe_routes(b: Bundle) -> list[str]:
    """Readiness on /readyz, liveness on /healthz, both routes the gateway serves."""
    problems = []
    served = _http_get_routes(b)
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": None}
    for probe, path_wanted in expected.items():
        spec = b.container.get(probe)
        if spec is None:
            if path_wanted is not None:
                problems.append(f"no {probe}")
            continue
        path = (spec.get("httpGet") or {}).get("path")
        if path not in served:
            problems.append(f"{probe} path {path!r} is not a route of the gateway (GET routes: {sorted(served)})")
        elif path_wanted is not None and path != path_wanted:
            problems.append(f"{probe} should use {path_wanted}, not {path}")
    return problems


def check_probe_ports(b: Bundle) -> list[str]:
    """Probe ports are the container's declared port, the one `gateway serve --port` listens on."""
    problems = []
    options, _ = _serve_options(_effective_argv(b.container, b.dockerfile))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        spec = b.container.get(probe)
        if spec is None:
            continue
        port = (spec.get("httpGet") or {}).get("port")
        number = _container_port(b.container, port)
        if number is None:
            problems.append(f"{probe} port {port!r} is not a port of the container")
        elif options is not None and number != options.port:
            problems.append(f"{probe} probes port {number}, the gateway listens on {options.port}")
    return problems


def check_scrape_annotations(b: Bundle) -> list[str]:
    annotations = b.pod["metadata"].get("annotations") or {}
    problems = []
    if annotations.get("prometheus.io/scrape") != "true":
        problems.append("pods are not annotated prometheus.io/scrape: 'true'")
    if _container_port(b.container, annotations.get("prometheus.io/port")) is None:
        problems.append(f"prometheus.io/port {annotations.get('prometheus.io/port')!r} is not a container port")
    path = annotations.get("prometheus.io/path", "/metrics")
    if path not in _http_get_routes(b):
        problems.append(f"prometheus.io/path {path!r} is not a route of the gateway")
    return problems


def check_grace_period(b: Bundle) -> list[str]:
    """terminationGracePeriodSeconds >= preStop sleep + drain_timeout_s (from the ConfigMap's
    config.yaml, parsed by the gateway) + time to exit."""
    config = _parse(b.config_text, "configmap.yaml:config.yaml")
    drain = config.gateway.drain_timeout_s
    sleep = _prestop_sleep_s(b.container)
    if sleep is None:
        return ["no preStop sleep: pods get SIGTERM before load balancers stop sending them calls"]
    grace = b.pod["spec"].get("terminationGracePeriodSeconds", 30)
    needed = sleep + drain + EXIT_MARGIN_S
    if grace < needed:
        return [f"terminationGracePeriodSeconds {grace} < preStop {sleep} s + drain_timeout_s {drain:g} s "
                f"+ {EXIT_MARGIN_S} s to exit = {needed:g}: calls would be killed mid-drain"]
    return []


def check_command(b: Bundle) -> list[str]:
    """The container runs `gateway serve` on the config file where the ConfigMap is mounted, on
    all interfaces, on the container's port, one worker."""
    options, problem = _serve_options(_effective_argv(b.container, b.dockerfile))
    if problem:
        return [problem]
    problems = []
    volumes = {v["name"]: v for v in b.pod["spec"].get("volumes") or []}
    config_name = b.config_map["metadata"]["name"]
    mounted = set()
    for mount in b.container.get("volumeMounts") or []:
        source = (volumes.get(mount["name"]) or {}).get("configMap") or {}
        if source.get("name") != config_name:
            continue
        if mount.get("subPath"):
            mounted.add(mount["mountPath"])
            continue
        items = source.get("items") or [{"key": "config.yaml", "path": "config.yaml"}]
        for item in items:
            if item["key"] == "config.yaml":
                mounted.add(str(PurePosixPath(mount["mountPath"]) / item["path"]))
    if options.config not in mounted:
        problems.append(f"--config {options.config} is not where the ConfigMap's config.yaml is mounted "
                        f"({sorted(mounted) or 'not mounted'})")
    if _container_port(b.container, options.port) is None:
        problems.append(f"--port {options.port} is not a declared container port")
    if options.host != "0.0.0.0":
        problems.append(f"--host {options.host}: the pod's address would not be reachable")
    if options.workers != 1:
        problems.append(f"--workers {options.workers}: one worker per pod, scale with pods")
    return problems


def check_security(b: Bundle) -> list[str]:
    pod_ctx = b.pod["spec"].get("securityContext") or {}
    ctx = {**pod_ctx, **(b.container.get("securityContext") or {})}
    problems = []
    if ctx.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if ctx.get("runAsUser", 1) == 0:
        problems.append("runAsUser is 0 (root)")
    if ctx.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    volumes = {v["name"]: v for v in b.pod["spec"].get("volumes") or []}
    tmp = [m for m in b.container.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append("no writable emptyDir at /tmp under the read-only root file system")
    return problems


def check_selectors(b: Bundle) -> list[str]:
    labels = b.pod["metadata"].get("labels") or {}
    problems = []
    if not _selects(b.deployment["spec"].get("selector"), labels):
        problems.append("the Deployment's selector does not select its own pods")
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in b.docs(kind):
            if not _selects(doc["spec"].get("selector"), labels):
                problems.append(f"{kind} {doc['metadata']['name']} does not select the gateway pods")
    if not b.docs("Service") or not b.docs("PodDisruptionBudget"):
        problems.append("a Service and a PodDisruptionBudget are expected")
    return problems


def check_autoscalers(b: Bundle) -> list[str]:
    """KEDA and HPA both target the Deployment, keep 2 replicas at least, and aim below max_calls."""
    name = b.deployment["metadata"]["name"]
    max_calls = _parse(b.config_text, "configmap.yaml:config.yaml").gateway.max_calls
    problems = []
    scalers = b.docs("ScaledObject") + b.docs("HorizontalPodAutoscaler")
    if {d["kind"] for d in scalers} != {"ScaledObject", "HorizontalPodAutoscaler"}:
        problems.append("expected a KEDA ScaledObject and an HPA")
    for doc in scalers:
        kind, spec = doc["kind"], doc["spec"]
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("name") != name or ref.get("kind", "Deployment") != "Deployment":
            problems.append(f"{kind} targets {ref.get('kind', 'Deployment')} {ref.get('name')}, not Deployment {name}")
        low = spec.get("minReplicaCount", spec.get("minReplicas", 1))
        if low < 2:
            problems.append(f"{kind} allows {low} replica: nothing takes calls while it drains")
        if kind == "ScaledObject":
            triggers = [t for t in spec.get("triggers") or [] if t.get("type") == "prometheus"]
            if not triggers or "gateway_active_calls" not in triggers[0]["metadata"].get("query", ""):
                problems.append("the ScaledObject has no prometheus trigger on gateway_active_calls")
                continue
            target = float(triggers[0]["metadata"]["threshold"])
        else:
            pods = [m["pods"] for m in spec.get("metrics") or [] if m.get("type") == "Pods"]
            if not pods or pods[0]["metric"]["name"] != "gateway_active_calls":
                problems.append("the HPA has no Pods metric gateway_active_calls")
                continue
            target = float(pods[0]["target"]["averageValue"])
        if not 0 < target < max_calls:
            problems.append(f"{kind} aims at {target:g} calls per pod, not below max_calls ({max_calls})")
    return problems


def check_kustomization(b: Bundle) -> list[str]:
    (kustomization,) = b.manifests["kustomization.yaml"]
    listed = list(kustomization.get("resources") or [])
    problems = [f"{f} is listed but does not exist" for f in listed if not (K8S / f).is_file()]
    problems += [f"{f} holds placeholders or examples and must not be applied" for f in listed
                 if f.endswith(".example.yaml")]
    autoscalers = [f for f in listed if f in ("keda-scaledobject.yaml", "hpa.yaml")]
    if len(autoscalers) != 1:
        problems.append(f"list one autoscaler, keda-scaledobject.yaml or hpa.yaml, not {autoscalers}")
    expected = {f for f in b.manifests if f != "kustomization.yaml" and not f.endswith(".example.yaml")}
    expected -= {"keda-scaledobject.yaml", "hpa.yaml"}
    problems += [f"{f} is not listed in kustomization.yaml" for f in sorted(expected - set(listed))]
    image = b.container["image"].rsplit(":", 1)[0]
    if image not in {i.get("name") for i in kustomization.get("images") or []}:
        problems.append(f"kustomization.yaml images: does not name the Deployment's image {image}")
    return problems


def check_secret_example(b: Bundle) -> list[str]:
    secret = b.secret_example
    values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
    problems = [] if values else ["the example Secret names no keys"]
    for key, value in values.items():
        if value not in ("", None) and not re.fullmatch(r"<[^<>]+>", str(value)):
            problems.append(f"{key}: {value!r} is not a <placeholder>")
    return problems


def check_env_supplies_config(b: Bundle) -> list[str]:
    """Every variable config.yaml requires comes from the env ConfigMap or the Secret the pods use."""
    sources = b.container.get("envFrom") or []
    config_maps = {cm["metadata"]["name"]: cm for cm in b.docs("ConfigMap")}
    available = {e["name"] for e in b.container.get("env") or []}
    problems = []
    for source in sources:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            if ref not in config_maps:
                problems.append(f"envFrom names ConfigMap {ref}, which no manifest defines")
            else:
                available |= set((config_maps[ref].get("data") or {}).keys())
        if "secretRef" in source:
            ref = source["secretRef"]["name"]
            if ref != b.secret_example["metadata"]["name"]:
                problems.append(f"envFrom names Secret {ref}; secret.example.yaml describes "
                                f"{b.secret_example['metadata']['name']}")
            else:
                available |= set((b.secret_example.get("stringData") or {}).keys())
    for name in sorted(_required_vars(b.config_text) - available):
        problems.append(f"config.yaml requires ${{{name}}}, which neither the env ConfigMap nor the Secret provides")
    if not problems:  # the config as the pods will read it
        try:
            parse_config(b.config_text, env=placeholders(available))
        except ConfigError as exc:
            problems += exc.problems
    return problems


def check_ingress(b: Bundle) -> list[str]:
    """The example ingress publishes the carrier routes only, to the Service's port."""
    paths = sorted({path for _, path in b.routes})
    services = {s["metadata"]["name"]: s for s in b.docs("Service")}
    problems = []
    ingresses = b.docs("Ingress")
    if not ingresses:
        return ["no example Ingress"]
    for ingress in ingresses:
        for rule in ingress["spec"].get("rules") or []:
            for item in rule["http"]["paths"]:
                prefix = item["path"]
                if item.get("pathType") == "Exact":
                    covered = [p for p in paths if p == prefix]
                else:
                    parts = [part for part in prefix.split("/") if part]
                    covered = [p for p in paths if [x for x in p.split("/") if x][: len(parts)] == parts]
                if not covered:
                    problems.append(f"ingress path {prefix} reaches no route of the gateway")
                for internal in INTERNAL_ROUTES:
                    if internal in covered:
                        problems.append(f"ingress path {prefix} publishes {internal}")
                backend = item["backend"]["service"]
                service = services.get(backend["name"])
                if service is None:
                    problems.append(f"ingress backend {backend['name']} is not the gateway's Service")
                    continue
                declared = service["spec"]["ports"]
                ports = {p.get("name") for p in declared} | {p["port"] for p in declared}
                if (backend["port"].get("name") or backend["port"].get("number")) not in ports:
                    problems.append(f"ingress backend port {backend['port']} is not a port of the Service")
    return problems


def check_dockerfile(b: Bundle) -> list[str]:
    stage = _final_stage(b.dockerfile)
    problems = []
    user = _image_user(b.dockerfile)
    if user in (None, "", "root", "0"):
        problems.append(f"the final stage runs as {user or 'root (no USER)'}")
    run_as = (b.pod["spec"].get("securityContext") or {}).get("runAsUser")
    if user is not None and run_as is not None and user != str(run_as):
        problems.append(f"the image's USER {user} is not the Deployment's runAsUser {run_as}")
    healthcheck = _last(stage, "HEALTHCHECK")
    if not healthcheck or "/healthz" not in healthcheck or healthcheck.upper().startswith("NONE"):
        problems.append("no HEALTHCHECK on /healthz in the final stage")
    entrypoint, cmd = _image_argv(b.dockerfile)
    options, problem = _serve_options(entrypoint + cmd)
    if problem:
        problems.append(f"ENTRYPOINT + CMD: {problem}")
    else:
        exposed = {int(port.split("/")[0]) for port in (_last(stage, "EXPOSE") or "").split()}
        if options.port not in exposed:
            problems.append(f"the image serves port {options.port} but EXPOSEs {sorted(exposed)}")
        if healthcheck and f":{options.port}/healthz" not in healthcheck:
            problems.append(f"the HEALTHCHECK does not ask port {options.port}")
        if options.config != "/etc/gateway/config.yaml":
            problems.append(f"the image reads its config from {options.config}, not /etc/gateway/config.yaml")
    env: dict[str, str] = {}
    for name, rest in stage:
        if name == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    if env.get("GATEWAY_LOG_FORMAT") != "json":
        problems.append("the image does not set GATEWAY_LOG_FORMAT=json")
    if (_last(stage, "STOPSIGNAL") or "SIGTERM") != "SIGTERM":
        problems.append("STOPSIGNAL is not SIGTERM: the gateway drains on SIGTERM")
    base = _from_images(b.dockerfile)
    if not base or base[-1] != "python:3.11-slim":
        problems.append(f"the final stage is built on {base[-1] if base else 'nothing'}, not python:3.11-slim")
    return problems


def check_dockerignore(b: Bundle) -> list[str]:
    """The build context keeps everything the Dockerfile copies from it."""
    patterns = [line.strip().lstrip("/") for line in b.dockerignore.splitlines()
                if line.strip() and not line.strip().startswith("#")]
    sources = []
    for stage in _dockerfile_stages(b.dockerfile)[1:]:
        for name, rest in stage:
            if name in ("COPY", "ADD") and "--from=" not in rest:
                sources += [word for word in shlex.split(rest) if not word.startswith("--")][:-1]
    if not sources:
        return ["the Dockerfile copies nothing from the build context"]
    problems = []
    for source in sources:
        for pattern in patterns:
            if not pattern.startswith("!") and (fnmatch.fnmatch(source, pattern)
                                                or fnmatch.fnmatch(source.split("/")[0], pattern)):
                problems.append(f"Dockerfile.dockerignore leaves out {source} ({pattern}), which the image needs")
    return problems


def check_bicep(b: Bundle) -> list[str]:
    """Container Apps: ingress and probes on port 8080, readiness /readyz, liveness /healthz,
    a grace period longer than the mounted config's drain, `gateway serve` on that config."""
    text, problems = b.bicep, []
    served = _http_get_routes(b)
    target_ports = _bicep_ints(text, "targetPort")
    if target_ports != [8080]:
        problems.append(f"ingress targetPort {target_ports}, expected [8080]")
    transport = re.search(r"\btransport:\s*'(\w+)'", text)
    if not transport or transport.group(1) not in ("auto", "http"):
        problems.append("ingress transport must be auto or http (HTTP/1.1 WebSockets)")
    probes = {p.get("type"): p for p in _bicep_probes(text)}
    for kind, path in (("Liveness", "/healthz"), ("Readiness", "/readyz")):
        probe = probes.get(kind)
        if probe is None:
            problems.append(f"no {kind} probe")
        elif probe.get("path") != path or path not in served:
            problems.append(f"{kind} probe on {probe.get('path')}, expected {path}")
    for kind, probe in probes.items():
        if probe.get("port") != "8080":
            problems.append(f"{kind} probe on port {probe.get('port')}, expected 8080")
    argv = _bicep_string_array(text, "command") + _bicep_string_array(text, "args")
    options, problem = _serve_options(argv)
    if problem:
        problems.append(f"container command: {problem}")
    elif options.port != 8080:
        problems.append(f"the container serves port {options.port}, the ingress targets 8080")
    mount = re.search(r"\bmountPath:\s*'([^']*)'", text)
    secret_path = re.search(r"\bsecretRef:\s*configSecretName\s*path:\s*'([^']*)'", _strip_bicep_comments(text))
    mounted = str(PurePosixPath(mount.group(1)) / secret_path.group(1)) if mount and secret_path else None
    if options is not None and options.config != mounted:
        problems.append(f"--config {options.config}, but the config secret is mounted at {mounted}")
    config_path = _aca_config_path(text)
    if config_path is None or not config_path.is_file() or not b.aca_config:
        return [*problems, "the template loads no config.yaml next to it"]
    config = _parse(b.aca_config, str(config_path.relative_to(ROOT)))
    graces = _bicep_ints(text, "terminationGracePeriodSeconds")
    needed = config.gateway.drain_timeout_s + EXIT_MARGIN_S
    if len(graces) != 1 or graces[0] < needed:
        problems.append(f"terminationGracePeriodSeconds {graces} < drain_timeout_s "
                        f"{config.gateway.drain_timeout_s:g} + {EXIT_MARGIN_S} s")
    code = _strip_bicep_comments(text)
    for name in sorted(_required_vars(b.aca_config)):
        # set as a plain variable (name: 'VAR') or read from Key Vault (VAR: 'secret-name')
        if not re.search(rf"(?m)name:\s*'{name}'|^\s*{name}:\s*'", code):
            problems.append(f"{config_path.name} requires ${{{name}}}, which the template never sets")
    return problems


CHECKS: list[Callable[[Bundle], list[str]]] = [
    check_probe_routes,
    check_probe_ports,
    check_scrape_annotations,
    check_grace_period,
    check_command,
    check_security,
    check_selectors,
    check_autoscalers,
    check_kustomization,
    check_secret_example,
    check_env_supplies_config,
    check_ingress,
    check_dockerfile,
    check_dockerignore,
    check_bicep,
]


# --------------------------------------------------------------------------------------------
# The shipped files pass every check


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_shipped_deployment_files_pass(check: Callable[[Bundle], list[str]], bundle: Bundle) -> None:
    assert check(bundle) == []


def test_every_yaml_file_parses_and_names_its_objects(shipped: Bundle) -> None:
    assert set(shipped.manifests) >= {
        "deployment.yaml", "service.yaml", "configmap.yaml", "secret.example.yaml", "pdb.yaml",
        "keda-scaledobject.yaml", "hpa.yaml", "kustomization.yaml"}
    for name, docs in shipped.manifests.items():
        assert docs, f"{name} is empty"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), f"{name}: a document without apiVersion/kind"
            if doc["kind"] != "Kustomization":
                assert doc["metadata"].get("name"), f"{name}: a {doc['kind']} without a name"
                assert "namespace" not in doc["metadata"], f"{name}: manifests are namespace-agnostic"


def test_both_production_configs_are_valid_and_refuse_to_start_without_their_settings(shipped: Bundle) -> None:
    for text, source in ((shipped.config_text, "configmap"), (shipped.aca_config, "azure/config.yaml")):
        config = _parse(text, source)
        assert config.voicelive.endpoint == PLACEHOLDER  # never the built-in simulator
        assert config.gateway.signing_key is not None
        required = _required_vars(text)
        assert {"AZURE_VOICELIVE_ENDPOINT", "GATEWAY_PUBLIC_URL", "GATEWAY_SIGNING_KEY"} <= required
        with pytest.raises(ConfigError, match="GATEWAY_SIGNING_KEY"):
            parse_config(text, source=source, env={})


def _alert_rules(markdown: str) -> dict[str, Any]:
    """The Prometheus rule file shown in docs/operations.md."""
    blocks = re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)
    rules = [yaml.safe_load(block) for block in blocks if "groups:" in block]
    assert len(rules) == 1, "docs/operations.md should show one Prometheus rule file"
    return rules[0]


def _unknown_metrics(rules: dict[str, Any]) -> set[str]:
    known = {metric.name for metric in REGISTRY.metrics}
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\bgateway_[a-z_]+", rule["expr"]):
                used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return used - known


def test_the_documented_alerts_use_metrics_the_gateway_exports() -> None:
    rules = _alert_rules((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    assert all(rule.get("alert") and rule.get("expr") for group in rules["groups"] for rule in group["rules"])
    assert _unknown_metrics(rules) == set()
    broken = copy.deepcopy(rules)
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(gateway_calls_dropped_total[5m])) > 0"
    assert _unknown_metrics(broken) == {"gateway_calls_dropped_total"}


# --------------------------------------------------------------------------------------------
# Every check finds the breakage it is for


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the breakage no longer applies: {old!r} is not in the file"
    return text.replace(old, new)


def _probe(b: Bundle, name: str) -> dict[str, Any]:
    return b.container[name]["httpGet"]


def _set_config(b: Bundle, old: str, new: str) -> None:
    b.config_map["data"]["config.yaml"] = _replace(b.config_text, old, new)


def _kustomize_resources(b: Bundle) -> list[str]:
    return b.manifests["kustomization.yaml"][0]["resources"]


def _keda(b: Bundle) -> dict[str, Any]:
    return b.one("ScaledObject")


def _hpa(b: Bundle) -> dict[str, Any]:
    return b.one("HorizontalPodAutoscaler")


def _env_config_map(b: Bundle) -> dict[str, Any]:
    name = next(s["configMapRef"]["name"] for s in b.container["envFrom"] if "configMapRef" in s)
    return next(cm for cm in b.docs("ConfigMap") if cm["metadata"]["name"] == name)


def _dockerfile(b: Bundle, old: str, new: str) -> None:
    b.dockerfile = _replace(b.dockerfile, old, new)


def _bicep(b: Bundle, old: str, new: str) -> None:
    b.bicep = _replace(b.bicep, old, new)


def _ingress_paths(b: Bundle) -> list[dict[str, Any]]:
    return b.one("Ingress")["spec"]["rules"][0]["http"]["paths"]


BREAKAGES: list[tuple[str, Callable[[Bundle], list[str]], Callable[[Bundle], Any], str]] = [
    ("readiness on a path the gateway lacks", check_probe_routes,
     lambda b: _probe(b, "readinessProbe").update(path="/ready"), "'/ready' is not a route"),
    ("liveness on /readyz: a full pod would be restarted", check_probe_routes,
     lambda b: _probe(b, "livenessProbe").update(path="/readyz"), "livenessProbe should use /healthz"),
    ("no readiness probe", check_probe_routes,
     lambda b: b.container.pop("readinessProbe"), "no readinessProbe"),
    ("readiness on another port", check_probe_ports,
     lambda b: _probe(b, "readinessProbe").update(port=9090), "9090"),
    ("the container port moves, the gateway's does not", check_probe_ports,
     lambda b: b.container["ports"][0].update(containerPort=9000), "listens on 8080"),
    ("scrape annotation on another port", check_scrape_annotations,
     lambda b: b.pod["metadata"]["annotations"].update({"prometheus.io/port": "9102"}), "9102"),
    ("scrape path the gateway lacks", check_scrape_annotations,
     lambda b: b.pod["metadata"]["annotations"].update({"prometheus.io/path": "/stats"}), "/stats"),
    ("grace period shorter than the drain", check_grace_period,
     lambda b: b.pod["spec"].update(terminationGracePeriodSeconds=600), "terminationGracePeriodSeconds 600"),
    ("drain raised, grace period not", check_grace_period,
     lambda b: _set_config(b, "drain_timeout_s: 600", "drain_timeout_s: 900"), "drain_timeout_s 900"),
    ("no preStop", check_grace_period,
     lambda b: b.container.pop("lifecycle"), "no preStop"),
    ("config path not where the ConfigMap is mounted", check_command,
     lambda b: b.container["args"].__setitem__(2, "/etc/gateway/gateway.yaml"), "--config /etc/gateway/gateway.yaml"),
    ("ConfigMap mounted elsewhere", check_command,
     lambda b: b.container["volumeMounts"][0].update(mountPath="/config"), "/config/config.yaml"),
    ("not `gateway serve`", check_command,
     lambda b: b.container.update(command=["python", "-m", "http.server"], args=[]), "not `gateway ...`"),
    ("`gateway demo` instead of serve", check_command,
     lambda b: b.container.update(args=["demo"]), "not `gateway serve`"),
    ("an argument `gateway serve` does not know", check_command,
     lambda b: b.container["args"].append("--threads=4"), "rejects these arguments"),
    ("listening on loopback only", check_command,
     lambda b: b.container["args"].__setitem__(4, "127.0.0.1"), "--host 127.0.0.1"),
    ("several workers per pod", check_command,
     lambda b: b.container["args"].extend(["--workers", "4"]), "--workers 4"),
    ("root allowed", check_security,
     lambda b: b.pod["spec"]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    ("writable root file system", check_security,
     lambda b: b.container["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    ("no /tmp volume", check_security,
     lambda b: b.container.update(volumeMounts=[m for m in b.container["volumeMounts"] if m["mountPath"] != "/tmp"]),
     "/tmp"),
    ("PDB selects other pods", check_selectors,
     lambda b: b.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
         {"app.kubernetes.io/name": "other"}), "PodDisruptionBudget"),
    ("Service selects other pods", check_selectors,
     lambda b: b.one("Service")["spec"]["selector"].update({"app.kubernetes.io/component": "web"}), "Service"),
    ("KEDA scales another Deployment", check_autoscalers,
     lambda b: _keda(b)["spec"]["scaleTargetRef"].update(name="other"), "ScaledObject targets Deployment other"),
    ("HPA aims above max_calls", check_autoscalers,
     lambda b: _hpa(b)["spec"]["metrics"][0]["pods"]["target"].update(averageValue="250"), "aims at 250"),
    ("KEDA on another metric", check_autoscalers,
     lambda b: _keda(b)["spec"]["triggers"][0]["metadata"].update(query="sum(up)"), "gateway_active_calls"),
    ("a single replica allowed", check_autoscalers,
     lambda b: _hpa(b)["spec"].update(minReplicas=1), "allows 1 replica"),
    ("both autoscalers applied", check_kustomization,
     lambda b: _kustomize_resources(b).append("hpa.yaml"), "list one autoscaler"),
    ("the example Secret applied", check_kustomization,
     lambda b: _kustomize_resources(b).append("secret.example.yaml"), "must not be applied"),
    ("the PDB left out", check_kustomization,
     lambda b: _kustomize_resources(b).remove("pdb.yaml"), "pdb.yaml is not listed"),
    ("a listed file that does not exist", check_kustomization,
     lambda b: _kustomize_resources(b).append("networkpolicy.yaml"), "does not exist"),
    ("a real-looking secret in the example", check_secret_example,
     lambda b: b.secret_example["stringData"].update(TWILIO_AUTH_TOKEN="f3a9c2e1d4b5"), "TWILIO_AUTH_TOKEN"),
    ("a required setting nobody provides", check_env_supplies_config,
     lambda b: _env_config_map(b)["data"].pop("GATEWAY_PUBLIC_URL"), "${GATEWAY_PUBLIC_URL}"),
    ("envFrom names another Secret", check_env_supplies_config,
     lambda b: next(s for s in b.container["envFrom"] if "secretRef" in s)["secretRef"].update(name="other"),
     "Secret other"),
    ("envFrom names a ConfigMap that does not exist", check_env_supplies_config,
     lambda b: next(s for s in b.container["envFrom"] if "configMapRef" in s)["configMapRef"].update(name="gone"),
     "ConfigMap gone"),
    ("ingress publishes everything", check_ingress,
     lambda b: _ingress_paths(b)[0].update(path="/"), "publishes /metrics"),
    ("ingress path with no route behind it", check_ingress,
     lambda b: _ingress_paths(b)[0].update(path="/voice"), "/voice reaches no route"),
    ("ingress to another Service", check_ingress,
     lambda b: _ingress_paths(b)[0]["backend"]["service"].update(name="web"), "web is not the gateway's Service"),
    ("image runs as root", check_dockerfile,
     lambda b: _dockerfile(b, "USER 10001:10001", "USER root"), "runs as root"),
    ("no USER at all", check_dockerfile,
     lambda b: _dockerfile(b, "USER 10001:10001\n", ""), "no USER"),
    ("image user is not the pod's", check_dockerfile,
     lambda b: b.pod["spec"]["securityContext"].update(runAsUser=2000), "runAsUser 2000"),
    ("no HEALTHCHECK", check_dockerfile,
     lambda b: _dockerfile(b, "HEALTHCHECK --interval", "# HEALTHCHECK --interval"), "no HEALTHCHECK"),
    ("HEALTHCHECK on another path", check_dockerfile,
     lambda b: _dockerfile(b, ":8080/healthz", ":8080/"), "no HEALTHCHECK on /healthz"),
    ("CMD not `gateway serve`", check_dockerfile,
     lambda b: _dockerfile(b, 'ENTRYPOINT ["gateway"]', 'ENTRYPOINT ["python", "-m", "http.server"]'),
     "not `gateway ...`"),
    ("port not exposed", check_dockerfile,
     lambda b: _dockerfile(b, "EXPOSE 8080", "EXPOSE 80"), "EXPOSEs [80]"),
    ("another Python", check_dockerfile,
     lambda b: _dockerfile(b, "ARG PYTHON_IMAGE=python:3.11-slim", "ARG PYTHON_IMAGE=python:3.12"),
     "built on python:3.12"),
    ("console logs in the image", check_dockerfile,
     lambda b: _dockerfile(b, "GATEWAY_LOG_FORMAT=json", "GATEWAY_LOG_FORMAT=console"), "GATEWAY_LOG_FORMAT"),
    ("the context leaves out what the image copies", check_dockerignore,
     lambda b: setattr(b, "dockerignore", b.dockerignore + "README.md\n"), "leaves out README.md"),
    ("the context leaves out the package", check_dockerignore,
     lambda b: setattr(b, "dockerignore", b.dockerignore + "gateway\n"), "leaves out gateway"),
    ("Container Apps readiness on /healthz", check_bicep,
     lambda b: _bicep(b, "path: '/readyz'", "path: '/healthz'"), "Readiness probe on /healthz"),
    ("Container Apps liveness missing", check_bicep,
     lambda b: _bicep(b, "type: 'Liveness'", "type: 'Startup'"), "no Liveness probe"),
    ("Container Apps probe on another port", check_bicep,
     lambda b: _bicep(b, "path: '/readyz'\n                port: 8080", "path: '/readyz'\n                port: 80"),
     "Readiness probe on port 80"),
    ("Container Apps ingress to another port", check_bicep,
     lambda b: _bicep(b, "targetPort: 8080", "targetPort: 80"), "targetPort [80]"),
    ("Container Apps grace period shorter than the drain", check_bicep,
     lambda b: _bicep(b, "terminationGracePeriodSeconds: 600", "terminationGracePeriodSeconds: 300"),
     "terminationGracePeriodSeconds [300]"),
    ("Container Apps drain raised, grace period not", check_bicep,
     lambda b: setattr(b, "aca_config", _replace(b.aca_config, "drain_timeout_s: 570", "drain_timeout_s: 595")),
     "drain_timeout_s 595"),
    ("Container Apps config mounted elsewhere", check_bicep,
     lambda b: _bicep(b, "mountPath: '/etc/gateway'", "mountPath: '/config'"), "mounted at /config/config.yaml"),
    ("Container Apps without the signing key", check_bicep,
     lambda b: _bicep(b, "GATEWAY_SIGNING_KEY: 'gateway-signing-key'", "SIGNING: 'gateway-signing-key'"),
     "${GATEWAY_SIGNING_KEY}"),
]


@pytest.mark.parametrize(("what", "check", "breakage", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_check_finds_its_breakage(
    what: str, check: Callable[[Bundle], list[str]], breakage: Callable[[Bundle], Any], expected: str,
    bundle: Bundle,
) -> None:
    assert check(bundle) == []
    breakage(bundle)
    problems = check(bundle)
    assert problems, f"{check.__name__} did not notice: {what}"
    assert any(expected in problem for problem in problems), problems


def test_every_check_is_shown_to_fail() -> None:
    assert {check.__name__ for check in CHECKS} == {b[1].__name__ for b in BREAKAGES}
