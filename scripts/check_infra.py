#!/usr/bin/env python3
"""Offline checks of lakevault's deployment files. Run through scripts/check-infra.sh,
which installs the pinned validators first.

Groups (each can be run alone with --only NAME):
  cli       the binaries' --help: the flags and LAKEVAULT_* variables that exist, and the
            worker's default drain period, which the other checks compare against
  docker    docker/*.Dockerfile: parsed with BuildKit's parser, project rules, hadolint;
            .dockerignore
  k8s       infra/k8s: base and every overlay rendered with kustomize (kubectl's), each
            object validated against the Kubernetes schemas (strict: unknown fields fail)
            or KEDA's CRD schemas (vendored), then project rules (probes, drain, security
            context, identities, KEDA wiring, flags and variables the binaries know)
  systemd   infra/vmss/lakevault-worker.service: systemd-analyze verify (any diagnostic
            fails) and security (exposure threshold), project rules
  cloudinit infra/vmss/cloud-init.yaml: YAML, cloud-init's own JSON schema (vendored),
            embedded files equal to their sources, worker.env variables, install script
  bicep     infra/bicep: parsed (syntax), module parameters, .bicepparam names, project rules

Exit status 1 when any check fails; every failure is printed with where it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import dockerfile
import jsonschema
import kubernetes_validate
import yaml

# Kubernetes releases the manifests are validated against: the oldest supported here and
# the newest schemas the pinned validator carries.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
KEDA_DIR = "infra/check/vendor/keda-v2.20.2"
CLOUD_INIT_SCHEMA = "infra/check/vendor/cloud-init-26.2/schema-cloud-config-v1.json"
NAMESPACE = "lakevault"
# Secrets the operator creates (docs/operations.md); never rendered from this repository.
OPERATOR_SECRETS = {"lakevault-api-token", "lakevault-sas", "lakevault-keda-queue"}
# Seconds a pod or unit must allow beyond the worker's drain before SIGKILL: releasing the
# messages still held and writing the ledger outcomes.
STOP_MARGIN_SECS = 10
# Parameters of KEDA's azure-queue scaler (v2.20.2).
AZURE_QUEUE_METADATA = {"queueName", "queueLength", "activationQueueLength", "queueLengthStrategy",
                        "accountName", "connection", "connectionFromEnv", "endpointSuffix", "cloud"}
POD_KINDS = {"Deployment", "Job", "CronJob", "ScaledJob", "Pod", "StatefulSet", "DaemonSet"}
# libyaml's parser (in the PyYAML wheel) is ~10x faster on the large KEDA CRDs.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def yaml_load(text: str):
    return yaml.load(text, Loader=YAML_LOADER)


def yaml_load_all(text: str):
    return yaml.load_all(text, Loader=YAML_LOADER)


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0
        self.group = ""

    def fail(self, where: str, message: str) -> None:
        self.failures.append(f"[{self.group}] {where}: {message}")

    def check(self, ok: bool, where: str, message: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.fail(where, message)
        return ok


# ------------------------------------------------------------------------------- cli


class Cli:
    """What the binaries accept, read from their --help."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self._cache: dict[tuple[str, str], tuple[set[str], set[str], dict[str, str]]] = {}

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def help(self, binary: str, sub: str) -> tuple[set[str], set[str], dict[str, str]]:
        """(flags, env vars, defaults by flag) of `binary sub --help`."""
        key = (binary, sub)
        if key not in self._cache:
            out = subprocess.run(
                [str(self.binary(binary)), sub, "--help"],
                capture_output=True, text=True, check=True,
            ).stdout
            flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", out, re.M))
            envs = set(re.findall(r"\[env: ([A-Z0-9_]+)=", out))
            defaults: dict[str, str] = {}
            for block in re.split(r"\n(?=\s+(?:-\w, )?--)", out):
                m = re.match(r"\s+(?:-\w, )?(--[a-z0-9-]+)", block)
                d = re.search(r"\[default: ([^\]]+)\]", block)
                if m and d:
                    defaults[m.group(1)] = d.group(1)
            self._cache[key] = (flags, envs, defaults)
        return self._cache[key]

    def subcommands(self, binary: str) -> set[str]:
        out = subprocess.run([str(self.binary(binary)), "--help"], capture_output=True,
                             text=True, check=True).stdout
        section = out.split("Commands:", 1)[1].split("Options:", 1)[0]
        return set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", section, re.M)) - {"help"}


def check_cli(r: Report, cli: Cli) -> None:
    for b in ("lakevault-worker", "lakevault-coordinator"):
        if not r.check(cli.binary(b).is_file(), str(cli.binary(b)),
                       "binary not found: build first (make build) or pass --bin-dir"):
            raise SystemExit(1)
    flags, envs, defaults = cli.help("lakevault-worker", "run")
    r.check("--health-listen" in flags and "LAKEVAULT_HEALTH_LISTEN" in envs,
            "lakevault-worker run --help", "no --health-listen / LAKEVAULT_HEALTH_LISTEN")
    r.check(defaults.get("--drain-timeout-secs", "").isdigit(), "lakevault-worker run --help",
            "no numeric default for --drain-timeout-secs")


def drain_default(cli: Cli) -> int:
    return int(cli.help("lakevault-worker", "run")[2]["--drain-timeout-secs"])


# ---------------------------------------------------------------------------- docker


def workspace_bins(root: Path) -> dict[str, str]:
    """bin name -> package name, over the workspace members."""
    ws = tomllib.loads((root / "Cargo.toml").read_text())
    bins: dict[str, str] = {}
    for member in ws["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        pkg = manifest["package"]["name"]
        for b in manifest.get("bin", []):
            bins[b["name"]] = pkg
        for f in sorted((root / member / "src" / "bin").glob("*.rs")):
            bins.setdefault(f.stem, pkg)
        if (root / member / "src" / "main.rs").is_file():
            bins.setdefault(pkg, pkg)
    return bins


def check_docker(r: Report, root: Path, venv_bin: Path, cli: Cli) -> dict[str, int]:
    """Returns the numeric runtime UID of each image (by binary name)."""
    bins = workspace_bins(root)
    version = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    uids: dict[str, int] = {}
    files = sorted((root / "docker").glob("*.Dockerfile"))
    r.check({f.name for f in files} >= {"worker.Dockerfile", "coordinator.Dockerfile"},
            "docker/", "expected worker.Dockerfile and coordinator.Dockerfile")
    for path in files:
        where = str(path.relative_to(root))
        try:
            cmds = dockerfile.parse_file(str(path))
        except dockerfile.GoParseError as e:
            r.fail(where, f"does not parse: {e}")
            continue
        stages: list[list] = []
        for c in cmds:
            if c.cmd == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(c)
        r.check(len(stages) >= 2, where, f"not multi-stage ({len(stages)} FROM)")
        stage_names = []
        for st in stages:
            image = st[0].value[0]
            stage_names.append(st[0].value[2] if len(st[0].value) >= 3 else None)
            r.check(":" in image.split("/")[-1] or "@sha256:" in image, where,
                    f"base image `{image}` has no tag or digest")
            r.check(not image.endswith(":latest"), where, f"base image `{image}` uses :latest")
        for c in cmds:
            if c.cmd == "ADD":
                r.check(not any(re.match(r"(https?|git)://|git@", v) for v in c.value), where,
                        f"line {c.start_line}: ADD of a remote URL (download in a RUN and verify a checksum)")
        final = stages[-1] if stages else []
        users = [c for c in final if c.cmd == "USER"]
        if r.check(bool(users), where, "final stage sets no USER"):
            user = users[-1].value[0].split(":")[0]
            if r.check(user.isdigit() and int(user) != 0, where,
                       f"final USER `{user}` is not a numeric non-root UID"):
                uid = int(user)
            else:
                uid = -1
        else:
            uid = -1
        entry = [c for c in final if c.cmd == "ENTRYPOINT"]
        if r.check(bool(entry), where, "final stage has no ENTRYPOINT"):
            r.check(entry[-1].json, where,
                    "ENTRYPOINT is in shell form: use the exec (JSON array) form so SIGTERM reaches the binary")
        for c in final:
            if c.cmd == "CMD":
                r.check(c.json, where, "CMD is in shell form")
        r.check(any(c.cmd == "EXPOSE" for c in final), where, "final stage EXPOSEs no port")
        labels: dict[str, str] = {}
        for c in final:
            if c.cmd == "LABEL":
                labels.update(zip(c.value[0::2], (v.strip('"') for v in c.value[1::2])))
        for key in ("title", "description", "version", "source", "licenses"):
            r.check(f"org.opencontainers.image.{key}" in labels, where, f"no OCI label org.opencontainers.image.{key}")
        args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1] for c in final
                if c.cmd == "ARG" and "=" in c.value[0]}
        r.check(args.get("VERSION") == version, where,
                f"ARG VERSION default `{args.get('VERSION')}` is not the workspace version {version}")
        built = None
        for c in cmds:
            if c.cmd != "RUN":
                continue
            text = " ".join(c.value)
            m = re.search(r"cargo build\b([^&;|]*)", text)
            if not m:
                continue
            opts = m.group(1).split()
            r.check("--locked" in opts and "--release" in opts, where, "cargo build without --locked --release")
            pkg = opts[opts.index("-p") + 1] if "-p" in opts else None
            b = opts[opts.index("--bin") + 1] if "--bin" in opts else None
            if r.check(b in bins, where, f"--bin `{b}` is not a binary of the workspace ({sorted(bins)})"):
                r.check(bins[b] == pkg, where, f"-p `{pkg}` does not build `{b}` (its package is {bins[b]})")
            built = b
        if r.check(built is not None, where, "no `cargo build -p <crate> --bin <bin>` step"):
            copies = [c for c in final if c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags)]
            r.check(any(c.value[-1].endswith("/" + built) for c in copies), where,
                    f"the final stage does not COPY --from the builder's `{built}`")
            r.check(bool(entry) and entry[-1].value[0].endswith("/" + built), where,
                    f"ENTRYPOINT does not run `{built}`")
            r.check(path.name.split(".")[0] in built, where, f"file name does not match the binary `{built}`")
            uids[built] = uid
            if cli.binary(built).is_file():
                known = set().union(*(cli.help(built, sub)[1] for sub in cli.subcommands(built)))
                for c in final:
                    if c.cmd == "ENV":
                        for k in c.value[0::2]:
                            if k.startswith("LAKEVAULT_"):
                                r.check(k in known, where, f"ENV {k}: no `{built}` command reads it")
        r.check(all(n != "latest" for n in stage_names), where, "stage named latest")
    # hadolint, with its default rules; any finding fails.
    if files:
        p = subprocess.run([str(venv_bin / "hadolint"), "--no-color", *map(str, files)],
                           capture_output=True, text=True)
        r.check(p.returncode == 0, "hadolint", (p.stdout + p.stderr).strip() or f"exit {p.returncode}")
    ignore = root / ".dockerignore"
    if r.check(ignore.is_file(), ".dockerignore", "missing (the build context is the repository root)"):
        entries = {line.strip().rstrip("/") for line in ignore.read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
        for needed in ("target", ".git", "azurite/node_modules", ".lakevault"):
            r.check(needed in entries, ".dockerignore", f"does not exclude {needed}")
        for kept in ("Cargo.toml", "Cargo.lock", "common", "plan", "coordinator", "worker", "tests"):
            r.check(kept not in entries, ".dockerignore", f"excludes {kept}, which the build needs")
    return uids


# ------------------------------------------------------------------------------- k8s


def to_json_schema(node):
    """A CRD's openAPIV3Schema as JSON Schema, strict like the API server with field
    validation Strict (kubectl's default): unknown fields are errors."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties"):
            out[k] = {name: to_json_schema(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = to_json_schema(v) if isinstance(v, dict) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(s) for s in v]
        elif k.startswith("x-kubernetes-") or k in ("nullable", "format", "description", "example"):
            continue
        else:
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def keda_validators(root: Path) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for f in sorted((root / KEDA_DIR).glob("*.yaml")):
        crd = yaml_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                schema = to_json_schema(v["schema"]["openAPIV3Schema"])
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
                validators[(f"{group}/{v['name']}", kind)] = cls(schema)
    return validators


def render(root: Path, kustomization: Path) -> list[dict]:
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        raise SystemExit("kubectl (its built-in kustomize renders the overlays) is not on PATH; set KUBECTL")
    p = subprocess.run([kubectl, "kustomize", str(kustomization)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip() or p.stdout.strip())
    return [d for d in yaml_load_all(p.stdout) if d]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(path, pod template spec holder) of every pod template in an object."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [("spec.template", spec.get("template", {}))]
    if kind == "CronJob":
        return [("spec.jobTemplate.spec.template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}))]
    if kind == "ScaledJob":
        return [("spec.jobTargetRef.template", spec.get("jobTargetRef", {}).get("template", {}))]
    if kind == "Pod":
        return [("", doc)]
    return []


def env_map(container: dict) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


def port_of(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_k8s(r: Report, root: Path, cli: Cli, image_uids: dict[str, int]) -> None:
    k8s = root / "infra/k8s"
    keda = keda_validators(root)
    r.check(len(keda) >= 3, KEDA_DIR, f"expected the ScaledObject, ScaledJob and TriggerAuthentication CRDs, found {sorted(keda)}")
    targets = [k8s / "base"] + sorted(p for p in (k8s / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
    r.check(len(targets) >= 4, "infra/k8s", "expected base and three overlays")
    drain = drain_default(cli)
    for target in targets:
        name = str(target.relative_to(root))
        is_overlay = target.name != "base"
        try:
            docs = render(root, target)
        except RuntimeError as e:
            r.fail(name, f"kustomize failed: {e}")
            continue
        r.check(bool(docs), name, "renders nothing")
        by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        # --- schemas
        for d in docs:
            where = f"{name}: {d['kind']}/{d['metadata'].get('name')}"
            key = (d.get("apiVersion"), d.get("kind"))
            if key in keda:
                errors = sorted(keda[key].iter_errors(d), key=lambda e: list(e.absolute_path))
                r.check(not errors, where, "; ".join(
                    f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5]))
                r.check(bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"].get("name", ""))),
                        where, "metadata.name is not a DNS label")
                continue
            if str(d.get("apiVersion", "")).startswith("keda.sh/"):
                r.fail(where, f"no vendored KEDA schema for {key}")
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                    r.passed += 1
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(map(str, e.absolute_path)) or "(root)"
                    r.fail(where, f"Kubernetes {version} schema: {path}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError:
                    r.fail(where, f"not a Kubernetes {version} kind (apiVersion {d.get('apiVersion')})")
        # --- namespace
        ns = by_kind.get("Namespace", {})
        r.check(NAMESPACE in ns, name, f"no Namespace {NAMESPACE}")
        if NAMESPACE in ns:
            labels = ns[NAMESPACE]["metadata"].get("labels", {})
            r.check(labels.get("pod-security.kubernetes.io/enforce") == "restricted", name,
                    "namespace does not enforce the restricted Pod Security Standard")
        for d in docs:
            if d["kind"] != "Namespace":
                r.check(d["metadata"].get("namespace") == NAMESPACE, f"{name}: {d['kind']}/{d['metadata']['name']}",
                        f"namespace is `{d['metadata'].get('namespace')}`, not {NAMESPACE} (set `namespace:` in the kustomization)")
        # --- config
        configs = {n: cm for n, cm in by_kind.get("ConfigMap", {}).items() if n.startswith("lakevault-config")}
        config = None
        if r.check(len(configs) == 1, name, f"expected one lakevault-config ConfigMap, found {sorted(configs)}"):
            cm_name, cm = next(iter(configs.items()))
            try:
                config = tomllib.loads(cm["data"]["lakevault.toml"])
            except (KeyError, tomllib.TOMLDecodeError) as e:
                r.fail(f"{name}: ConfigMap/{cm_name}", f"lakevault.toml: {e}")
        # --- pods
        images = set()
        for d in docs:
            for tpath, tmpl in pod_templates(d):
                where = f"{name}: {d['kind']}/{d['metadata']['name']}"
                check_pod(r, where, d, tmpl, by_kind, cli, config, drain, image_uids, is_overlay)
                for c in tmpl.get("spec", {}).get("containers", []):
                    images.add(c.get("image", ""))
        if is_overlay:
            prefixes = {i.rsplit("/", 1)[0] + ":" + i.rsplit(":", 1)[-1] for i in images}
            r.check(len(prefixes) == 1, name, f"images come from different registries or tags: {sorted(images)}")
        # --- workload identity
        if "aks-workload-identity" in str(target) or target.name == "scaledjob":
            sas = by_kind.get("ServiceAccount", {})
            ids = set()
            for sa_name, sa in sas.items():
                cid = sa["metadata"].get("annotations", {}).get("azure.workload.identity/client-id", "")
                r.check(bool(UUID.match(cid)), f"{name}: ServiceAccount/{sa_name}",
                        "no azure.workload.identity/client-id annotation (a client id)")
                ids.add(cid)
            r.check(len(ids) == len(sas) >= 2, name, "workers and coordinator must use different identities")
            for d in docs:
                for _, tmpl in pod_templates(d):
                    r.check(tmpl.get("metadata", {}).get("labels", {}).get("azure.workload.identity/use") == "true",
                            f"{name}: {d['kind']}/{d['metadata']['name']}",
                            "pod template lacks the label azure.workload.identity/use: \"true\"")
        # --- KEDA wiring
        scalers = list(by_kind.get("ScaledObject", {}).values()) + list(by_kind.get("ScaledJob", {}).values())
        if is_overlay:
            r.check(bool(scalers), name, "no ScaledObject or ScaledJob: workers would not scale")
        for s in scalers:
            where = f"{name}: {s['kind']}/{s['metadata']['name']}"
            if s["kind"] == "ScaledObject":
                target_name = s["spec"]["scaleTargetRef"]["name"]
                dep = by_kind.get("Deployment", {}).get(target_name)
                if r.check(dep is not None, where, f"scaleTargetRef names no Deployment `{target_name}` in the render"):
                    r.check("replicas" not in dep["spec"], where,
                            f"Deployment/{target_name} sets replicas, which every apply would reset under KEDA")
                    pod = dep["spec"]["template"]
                else:
                    pod = None
            else:
                pod = s["spec"]["jobTargetRef"]["template"]
            for trig in s["spec"]["triggers"]:
                auth = trig.get("authenticationRef", {}).get("name")
                r.check(auth in by_kind.get("TriggerAuthentication", {}), where,
                        f"authenticationRef `{auth}` is not a TriggerAuthentication in the render")
                if trig["type"] != "azure-queue":
                    continue
                md = trig["metadata"]
                # Trigger metadata is a string map in the CRD, so KEDA's own parameter list
                # (pkg/scalers/azure_queue_scaler.go, v2.20.2) is checked here.
                unknown = set(md) - AZURE_QUEUE_METADATA
                r.check(not unknown, where, f"azure-queue metadata has unknown keys {sorted(unknown)}")
                r.check(bool(md.get("queueName")), where, "azure-queue trigger without queueName")
                r.check(str(md.get("queueLength", "")).isdigit(), where, "queueLength is not a whole number")
                ta = by_kind.get("TriggerAuthentication", {}).get(auth, {}).get("spec", {})
                if ta.get("podIdentity", {}).get("provider") == "azure-workload":
                    r.check(bool(md.get("accountName")), where, "azure-workload needs accountName in the trigger")
                else:
                    r.check(any(s.get("parameter") == "connection" for s in ta.get("secretTargetRef", []))
                            or "connectionFromEnv" in md, where,
                            "without pod identity the trigger needs a `connection` (TriggerAuthentication secretTargetRef)")
                if config:
                    qname = config["queue"]["name"]
                    r.check(md.get("queueName") == qname, where,
                            f"queueName `{md.get('queueName')}` is not the config's [queue].name `{qname}`")
                    qacct = config["accounts"][config["queue"]["account"]].get("account_name")
                    if "accountName" in md:
                        r.check(md["accountName"] == qacct, where,
                                f"accountName `{md['accountName']}` is not the queue account `{qacct}`")
                r.check(md.get("queueLengthStrategy", "all") == "all", where,
                        "queueLengthStrategy must be `all`: messages held by workers must count")
                if pod:
                    worker = pod["spec"]["containers"][0]
                    prefetch = env_map(worker).get("LAKEVAULT_PREFETCH") or cli.help("lakevault-worker", "run")[2]["--prefetch"]
                    r.check(md.get("queueLength") == prefetch, where,
                            f"queueLength {md.get('queueLength')} is not the workers' LAKEVAULT_PREFETCH {prefetch} (docs/operations.md, sizing)")
        # --- scheduled backups
        crons = by_kind.get("CronJob", {})
        modes = set()
        for c_name, c in crons.items():
            where = f"{name}: CronJob/{c_name}"
            r.check(c["spec"].get("concurrencyPolicy") == "Forbid", where, "concurrencyPolicy is not Forbid")
            args = c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].get("args", [])
            if "--mode" in args:
                modes.add(args[args.index("--mode") + 1])
        r.check(modes == {"incremental", "full"}, name, f"expected an incremental and a full backup CronJob, found modes {sorted(modes)}")


def check_pod(r: Report, where: str, owner: dict, tmpl: dict, by_kind, cli: Cli, config, drain: int,
              image_uids: dict[str, int], is_overlay: bool) -> None:
    spec = tmpl.get("spec", {})
    psc = spec.get("securityContext", {})
    r.check(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot is not true")
    r.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccompProfile is not RuntimeDefault")
    r.check(spec.get("automountServiceAccountToken") is False, where, "automountServiceAccountToken is not false")
    sa = spec.get("serviceAccountName")
    r.check(sa in by_kind.get("ServiceAccount", {}), where, f"serviceAccountName `{sa}` is not in the render")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v:
            r.check(v["configMap"]["name"] in by_kind.get("ConfigMap", {}), where,
                    f"volume {v['name']}: ConfigMap `{v['configMap']['name']}` is not in the render")
        if "secret" in v:
            sname = v["secret"]["secretName"]
            r.check(sname in by_kind.get("Secret", {}) or sname in OPERATOR_SECRETS, where,
                    f"volume {v['name']}: Secret `{sname}` is neither rendered nor one the operator creates {sorted(OPERATOR_SECRETS)}")
    annotations = tmpl.get("metadata", {}).get("annotations", {})
    for c in spec.get("containers", []):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        r.check(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation is not false")
        r.check(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem is not true")
        r.check("ALL" in sc.get("capabilities", {}).get("drop", []), cw, "capabilities do not drop ALL")
        res = c.get("resources", {})
        for k in ("cpu", "memory"):
            r.check(k in res.get("requests", {}), cw, f"no {k} request")
            r.check(k in res.get("limits", {}), cw, f"no {k} limit")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        for m in mounts.values():
            r.check(m["name"] in volumes, cw, f"volumeMount {m['name']} has no volume")
        image = c.get("image", "")
        binary = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
        if is_overlay:
            r.check("/" in image and ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), cw,
                    f"image `{image}` is not a registry name with a version tag")
        if not r.check(binary in ("lakevault-worker", "lakevault-coordinator"), cw, f"image `{image}` is not a lakevault image"):
            continue
        uid = psc.get("runAsUser", sc.get("runAsUser"))
        if binary in image_uids:
            r.check(uid == image_uids[binary], cw, f"runAsUser {uid} is not the image's USER {image_uids[binary]}")
        args = c.get("args", [])
        if not r.check(bool(args), cw, "no args: name the subcommand"):
            continue
        sub = args[0]
        if not r.check(sub in cli.subcommands(binary), cw, f"`{sub}` is not a {binary} command"):
            continue
        flags, envs, defaults = cli.help(binary, sub)
        for a in args[1:]:
            if a.startswith("--"):
                r.check(a.split("=", 1)[0] in flags, cw, f"`{binary} {sub}` has no flag {a}")
        env = env_map(c)
        for k in env:
            if k.startswith("LAKEVAULT_"):
                r.check(k in envs, cw, f"`{binary} {sub}` reads no variable {k}")
        cfg_path = env.get("LAKEVAULT_CONFIG", defaults.get("--config", "lakevault.toml"))
        cfg_mount = mounts.get(str(Path(cfg_path).parent))
        r.check(cfg_mount is not None and "configMap" in volumes.get(cfg_mount["name"], {}), cw,
                f"LAKEVAULT_CONFIG {cfg_path} is not in a mounted ConfigMap")
        if config:
            for alias, acct in config.get("accounts", {}).items():
                for key, value in acct.items():
                    if key.endswith("_file"):
                        covered = [p for p, m in mounts.items()
                                   if value.startswith(p.rstrip("/") + "/") and "secret" in volumes.get(m["name"], {})]
                        r.check(bool(covered), cw, f"accounts.{alias}.{key} = {value} is not in a mounted Secret")
                        for p in covered:
                            r.check("subPath" not in mounts[p], cw,
                                    f"{p} is mounted with subPath: the kubelet never updates it, so a rotated token would not arrive")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if binary == "lakevault-worker":
            d = int(env.get("LAKEVAULT_DRAIN_TIMEOUT_SECS", drain))
            r.check(grace >= d + STOP_MARGIN_SECS, cw,
                    f"terminationGracePeriodSeconds {grace} leaves less than {STOP_MARGIN_SECS} s after the {d} s drain")
            listen = env.get("LAKEVAULT_HEALTH_LISTEN")
            if r.check(bool(listen), cw, "no LAKEVAULT_HEALTH_LISTEN: no probes, no /metrics"):
                port = int(listen.rsplit(":", 1)[1])
                r.check(any(p["containerPort"] == port for p in c.get("ports", [])), cw,
                        f"health port {port} is not a containerPort")
                probe = c.get("livenessProbe", {}).get("httpGet", {})
                r.check(probe.get("path") == "/healthz" and port_of(c, probe.get("port")) == port, cw,
                        f"livenessProbe is not GET /healthz on {port}")
                if owner["kind"] == "Deployment":
                    probe = c.get("readinessProbe", {}).get("httpGet", {})
                    r.check(probe.get("path") == "/readyz" and port_of(c, probe.get("port")) == port, cw,
                            f"readinessProbe is not GET /readyz on {port}")
                check_scrape(r, cw, annotations, port)
        if binary == "lakevault-coordinator" and sub == "serve":
            listen = env.get("LAKEVAULT_LISTEN", defaults.get("--listen", ""))
            r.check(listen.startswith("0.0.0.0:"), cw, f"serve listens on {listen}: unreachable from outside the pod")
            port = int(listen.rsplit(":", 1)[1])
            r.check(any(p["containerPort"] == port for p in c.get("ports", [])), cw, f"listen port {port} is not a containerPort")
            for probe_name in ("livenessProbe", "readinessProbe"):
                probe = c.get(probe_name, {}).get("httpGet", {})
                r.check(probe.get("path") == "/healthz" and port_of(c, probe.get("port")) == port, cw,
                        f"{probe_name} is not GET /healthz on {port} (the only path without a token)")
            token = env.get("LAKEVAULT_API_TOKEN_FILE", "")
            r.check(any(token.startswith(p.rstrip("/") + "/") and "secret" in volumes.get(m["name"], {})
                        for p, m in mounts.items()), cw, "LAKEVAULT_API_TOKEN_FILE is not in a mounted Secret")
            check_scrape(r, cw, annotations, port)
            svc = [s for s in by_kind.get("Service", {}).values()
                   if all(tmpl["metadata"]["labels"].get(k) == v for k, v in s["spec"].get("selector", {}).items())]
            r.check(len(svc) == 1 and any(port_of(c, p.get("targetPort")) == port for p in svc[0]["spec"]["ports"]), cw,
                    "no Service selects the serve pods on their listen port")


def check_scrape(r: Report, where: str, annotations: dict, port: int) -> None:
    r.check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(port)
            and annotations.get("prometheus.io/path") == "/metrics", where,
            f"prometheus.io annotations do not point at /metrics on {port}")


# --------------------------------------------------------------------------- systemd


def unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            values.setdefault(k.strip(), []).append(v.strip())
    return values


def check_systemd(r: Report, root: Path, cli: Cli) -> None:
    unit = root / "infra/vmss/lakevault-worker.service"
    where = str(unit.relative_to(root))
    text = unit.read_text()
    v = unit_values(text)
    one = lambda k: (v.get(k) or [""])[-1]  # noqa: E731
    exec_start = one("ExecStart").split()
    r.check(exec_start[:1] == ["/usr/local/bin/lakevault-worker"] and exec_start[1:2] == ["run"], where,
            f"ExecStart is `{one('ExecStart')}`, not /usr/local/bin/lakevault-worker run")
    r.check(one("Restart") == "on-failure", where, "Restart is not on-failure")
    r.check(one("KillSignal") == "SIGTERM", where, "KillSignal is not SIGTERM")
    r.check(one("NoNewPrivileges") == "yes", where, "NoNewPrivileges is not yes")
    r.check(one("ProtectSystem") == "strict", where, "ProtectSystem is not strict")
    r.check(bool(one("User")) and one("User") != "root" or one("DynamicUser") == "yes", where, "runs as root")
    r.check(bool(one("EnvironmentFile")), where, "no EnvironmentFile=")
    stop = one("TimeoutStopSec")
    drain = drain_default(cli)
    r.check(stop.isdigit() and int(stop) >= drain + STOP_MARGIN_SECS, where,
            f"TimeoutStopSec `{stop}` leaves less than {STOP_MARGIN_SECS} s after the {drain} s drain")
    flags = cli.help("lakevault-worker", "run")[0]
    for a in exec_start[2:]:
        if a.startswith("--"):
            r.check(a.split("=", 1)[0] in flags, where, f"lakevault-worker run has no flag {a}")
    # systemd-analyze checks that ExecStart's binary exists and is executable, so verify a
    # copy whose ExecStart points at the freshly built worker.
    analyze = shutil.which("systemd-analyze")
    if not r.check(analyze is not None, where, "systemd-analyze not found"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(cli.binary("lakevault-worker"), Path(tmp) / "lakevault-worker")
        copy_unit = Path(tmp) / unit.name
        copy_unit.write_text(text.replace("/usr/local/bin/lakevault-worker", f"{tmp}/lakevault-worker"))
        p = subprocess.run([analyze, "verify", "--man=no", str(copy_unit)], capture_output=True, text=True)
        diag = (p.stdout + p.stderr).strip()
        r.check(p.returncode == 0 and not diag, f"{where} (systemd-analyze verify)", diag or f"exit {p.returncode}")
        p = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(copy_unit)],
                           capture_output=True, text=True)
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
        r.check(p.returncode == 0, f"{where} (systemd-analyze security)",
                f"exposure {level.group(1) if level else '?'} above 2.0 (0 best, 10 worst; --threshold is in tenths): {p.stderr.strip()}")


# ------------------------------------------------------------------------- cloud-init


def check_cloud_init(r: Report, root: Path, cli: Cli) -> None:
    path = root / "infra/vmss/cloud-init.yaml"
    where = str(path.relative_to(root))
    text = path.read_text()
    r.check(text.startswith("#cloud-config\n"), where, "first line is not #cloud-config")
    try:
        doc = yaml_load(text)
    except yaml.YAMLError as e:
        r.fail(where, f"not YAML: {e}")
        return
    schema = json.loads((root / CLOUD_INIT_SCHEMA).read_text())
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    r.check(not errors, f"{where} (cloud-init schema)", "; ".join(
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:5]))
    files = {f.get("path"): f for f in doc.get("write_files", [])}
    users = [u for u in doc.get("users", []) if isinstance(u, dict)]
    r.check(any(u.get("name") == "lakevault" and u.get("system") for u in users), where, "no system user lakevault")
    for target, source in (("/etc/lakevault/lakevault.toml", "infra/vmss/lakevault.toml"),
                           ("/etc/systemd/system/lakevault-worker.service", "infra/vmss/lakevault-worker.service"),
                           ("/usr/local/sbin/lakevault-install-worker", "infra/vmss/install-worker.sh")):
        entry = files.get(target)
        if r.check(entry is not None, where, f"writes no {target}"):
            r.check(entry.get("content") == (root / source).read_text(), where,
                    f"{target} differs from {source} (edit the source, then copy it into the YAML)")
    for owned in ("/etc/lakevault/lakevault.toml", "/etc/lakevault/worker.env"):
        entry = files.get(owned, {})
        if entry.get("owner", "").endswith(":lakevault"):
            r.check(entry.get("defer") is True, where,
                    f"{owned} is owned by the lakevault group but not deferred: write_files runs before users are created")
    env_entry = files.get("/etc/lakevault/worker.env")
    if r.check(env_entry is not None, where, "writes no /etc/lakevault/worker.env"):
        flags, envs, defaults = cli.help("lakevault-worker", "run")
        env = {}
        for line in env_entry["content"].splitlines():
            if line.strip() and not line.startswith("#"):
                k, _, val = line.partition("=")
                env[k] = val
                if k.startswith("LAKEVAULT_"):
                    r.check(k in envs, where, f"worker.env: lakevault-worker run reads no variable {k}")
        r.check(env.get("LAKEVAULT_CONFIG") == "/etc/lakevault/lakevault.toml", where,
                "worker.env: LAKEVAULT_CONFIG is not /etc/lakevault/lakevault.toml")
        stop = unit_values((root / "infra/vmss/lakevault-worker.service").read_text()).get("TimeoutStopSec", ["0"])[-1]
        d = int(env.get("LAKEVAULT_DRAIN_TIMEOUT_SECS", defaults["--drain-timeout-secs"]))
        r.check(stop.isdigit() and int(stop) >= d + STOP_MARGIN_SECS, where,
                f"worker.env drain {d} s leaves less than {STOP_MARGIN_SECS} s before the unit's TimeoutStopSec {stop}")
    unit = unit_values((root / "infra/vmss/lakevault-worker.service").read_text())
    r.check(unit.get("EnvironmentFile", [""])[-1].lstrip("-") == "/etc/lakevault/worker.env", where,
            "the unit's EnvironmentFile is not /etc/lakevault/worker.env")
    r.check(unit.get("User", [""])[-1] == "lakevault", where, "the unit does not run as the lakevault user")
    runcmd = [c if isinstance(c, list) else c.split() for c in doc.get("runcmd", [])]
    r.check(any(c[:1] == ["/usr/local/sbin/lakevault-install-worker"] for c in runcmd), where, "runcmd does not install the worker")
    r.check(any(c[:2] == ["systemctl", "enable"] and "lakevault-worker.service" in c for c in runcmd), where,
            "runcmd does not enable lakevault-worker.service")
    check_install_script(r, root)


def check_install_script(r: Report, root: Path) -> None:
    """Runs install-worker.sh against a local file: it installs what matches the checksum
    and refuses anything else."""
    script = root / "infra/vmss/install-worker.sh"
    where = str(script.relative_to(root))
    p = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    if not r.check(p.returncode == 0, where, p.stderr.strip()):
        return
    if not shutil.which("curl"):
        r.fail(where, "curl not found: cannot run the install script")
        return
    import hashlib

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        payload = t / "lakevault-worker.bin"
        payload.write_bytes(b"\x7fELF not really a worker\n")
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        for label, sha, should_install in (("good checksum", digest, True), ("bad checksum", "0" * 64, False)):
            rootdir = t / label.replace(" ", "-")
            env_file = t / f"{rootdir.name}.env"
            env_file.write_text(f"WORKER_URL=file://{payload}\nWORKER_SHA256={sha}\nWORKER_URL_AUTH=none\n")
            p = subprocess.run(["bash", str(script), str(env_file)], capture_output=True, text=True,
                               env={**os.environ, "LAKEVAULT_INSTALL_ROOT": str(rootdir)})
            installed = rootdir / "usr/local/bin/lakevault-worker"
            if should_install:
                r.check(p.returncode == 0 and installed.is_file() and os.access(installed, os.X_OK)
                        and installed.read_bytes() == payload.read_bytes(), f"{where} ({label})",
                        f"did not install the binary: exit {p.returncode} {p.stderr.strip()}")
            else:
                r.check(p.returncode != 0 and not installed.exists(), f"{where} ({label})",
                        f"installed a binary whose checksum does not match (exit {p.returncode})")


# ------------------------------------------------------------------------------ bicep


def bicep_symbols(parsed: dict) -> set[str]:
    names: set[str] = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        names |= set(parsed.get(section, {}))

    def walk(node):
        if isinstance(node, dict):
            lt = node.get("loop_type")
            if isinstance(lt, dict):
                detail = lt.get("detail", {})
                for k in ("item_name", "index_name"):
                    if detail.get(k):
                        names.add(detail[k])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(parsed)
    return names


def interpolated_names(node) -> set[str]:
    """First identifiers of ${...} expressions that are not function calls."""
    found: set[str] = set()
    if isinstance(node, dict):
        for v in node.values():
            found |= interpolated_names(v)
    elif isinstance(node, list):
        for v in node:
            found |= interpolated_names(v)
    elif isinstance(node, str):
        for expr in re.findall(r"\$\{([^}]*)\}", node):
            m = re.match(r"\s*([A-Za-z_]\w*)\s*(\()?", expr)
            if m and not m.group(2):
                found.add(m.group(1))
    return found


def check_bicep(r: Report, root: Path) -> None:
    from pycep import BicepParser

    bicep_dir = root / "infra/bicep"
    parsed: dict[Path, dict] = {}
    files = sorted(bicep_dir.rglob("*.bicep"))
    r.check(any(f.name == "main.bicep" for f in files), "infra/bicep", "no main.bicep")
    for f in files:
        where = str(f.relative_to(root))
        try:
            parsed[f] = BicepParser().parse(file_path=f)
            r.passed += 1
        except Exception as e:  # the parser raises lark errors of several kinds
            r.fail(where, f"does not parse: {str(e).splitlines()[0]}")
    for f, doc in parsed.items():
        where = str(f.relative_to(root))
        symbols = bicep_symbols(doc)
        for name in sorted(interpolated_names(doc) - symbols):
            r.fail(where, f"`${{{name}}}` names nothing declared in this file")
        for mname, module in doc.get("modules", {}).items():
            rel = module["detail"].get("path")
            target = (f.parent / rel).resolve()
            if not r.check(target in parsed, where, f"module {mname}: {rel} is not a parsed Bicep file"):
                continue
            declared = parsed[target].get("parameters", {})
            given = set(module["config"].get("config", module["config"]).get("params", {}))
            for p in sorted(given - set(declared)):
                r.fail(where, f"module {mname} passes `{p}`, which {rel} does not declare")
            required = {p for p, d in declared.items() if "default" not in d}
            for p in sorted(required - given):
                r.fail(where, f"module {mname} does not pass `{p}`, which {rel} requires")
        for rname, res in doc.get("resources", {}).items():
            if res.get("type") == "Microsoft.Storage/storageAccounts" and not res.get("existing"):
                props = res["config"].get("config", res["config"]).get("properties", {})
                rw = f"{where}: resource {rname}"
                r.check(props.get("minimumTlsVersion") == "TLS1_2", rw, "minimumTlsVersion is not TLS1_2")
                r.check(props.get("allowBlobPublicAccess") is False, rw, "allowBlobPublicAccess is not false")
                r.check(props.get("supportsHttpsTrafficOnly") is True, rw, "supportsHttpsTrafficOnly is not true")
                r.check(props.get("isHnsEnabled") is False, rw, "isHnsEnabled is not false (blob index tags need a flat account)")
    main = parsed.get(bicep_dir / "main.bicep")
    if main:
        params = main.get("parameters", {})
        k8s_config = tomllib.loads((root / "infra/k8s/base/lakevault.toml").read_text())
        r.check(params.get("queueName", {}).get("default") == k8s_config["queue"]["name"], "infra/bicep/main.bicep",
                "queueName default is not infra/k8s/base/lakevault.toml's [queue].name")
        sas = {d["metadata"]["name"] for d in yaml_load_all((root / "infra/k8s/base/serviceaccounts.yaml").read_text()) if d}
        for p in ("workerServiceAccount", "coordinatorServiceAccount"):
            r.check(params.get(p, {}).get("default") in sas, "infra/bicep/main.bicep",
                    f"{p} default is not a service account of infra/k8s/base ({sorted(sas)})")
        r.check(params.get("kubernetesNamespace", {}).get("default") == NAMESPACE, "infra/bicep/main.bicep",
                f"kubernetesNamespace default is not {NAMESPACE}")
        # The VM autoscale threshold is messages per instance: the VMs' prefetch (as for KEDA).
        ci = yaml_load((root / "infra/vmss/cloud-init.yaml").read_text())
        env = next((f["content"] for f in ci.get("write_files", []) if f.get("path") == "/etc/lakevault/worker.env"), "")
        prefetch = re.search(r"^LAKEVAULT_PREFETCH=(\d+)$", env, re.M)
        r.check(prefetch is not None and params.get("messagesPerInstance", {}).get("default") == int(prefetch.group(1)),
                "infra/bicep/main.bicep", "messagesPerInstance default is not the VMs' LAKEVAULT_PREFETCH (infra/vmss/cloud-init.yaml)")
        text = (bicep_dir / "main.bicep").read_text()
        r.check("'${queueName}-poison'" in text, "infra/bicep/main.bicep", "the poison queue is not <queueName>-poison")
        r.check("metricName: 'ApproximateMessageCount'" in text, "infra/bicep/main.bicep",
                "the autoscale rule does not use the per-queue ApproximateMessageCount metric")
        for pf in sorted(bicep_dir.glob("*.bicepparam")):
            ptext = pf.read_text()
            pw = str(pf.relative_to(root))
            m = re.search(r"^using '([^']+)'", ptext, re.M)
            if r.check(m is not None, pw, "no `using` line"):
                r.check((pf.parent / m.group(1)).resolve() == (bicep_dir / "main.bicep").resolve(), pw,
                        f"uses {m.group(1)}, not main.bicep")
            for name in re.findall(r"^param (\w+)\s*=", ptext, re.M):
                r.check(name in params, pw, f"param {name} is not declared in main.bicep")
            given = set(re.findall(r"^param (\w+)\s*=", ptext, re.M))
            for name, d in params.items():
                if "default" not in d:
                    r.check(name in given, pw, f"required param {name} is not set")


# ------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--bin-dir", type=Path, help="where the built binaries are (default: $CARGO_TARGET_DIR/debug or target/debug)")
    ap.add_argument("--only", action="append", choices=["cli", "docker", "k8s", "systemd", "cloudinit", "bicep"])
    args = ap.parse_args()
    root = args.root.resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    if not target.is_absolute():
        target = root / target
    cli = Cli(args.bin_dir or target / "debug")
    venv_bin = Path(sys.executable).parent
    groups = args.only or ["cli", "docker", "k8s", "systemd", "cloudinit", "bicep"]
    r = Report()
    uids: dict[str, int] = {}
    r.group = "cli"
    check_cli(r, cli)
    for g in groups:
        r.group = g
        before = (r.passed, len(r.failures))
        if g == "docker":
            uids = check_docker(r, root, venv_bin, cli)
        elif g == "k8s":
            if not uids:
                r.group = "docker"
                uids = check_docker(r, root, venv_bin, cli)
                r.group = g
            check_k8s(r, root, cli, uids)
        elif g == "systemd":
            check_systemd(r, root, cli)
        elif g == "cloudinit":
            check_cloud_init(r, root, cli)
        elif g == "bicep":
            check_bicep(r, root)
        if g != "cli":
            print(f"check-infra {g}: {r.passed - before[0]} checks ok, {len(r.failures) - before[1]} failing", file=sys.stderr)
    for f in r.failures:
        print(f"FAIL {f}", file=sys.stderr)
    if r.failures:
        print(f"check-infra: {len(r.failures)} failing checks", file=sys.stderr)
        return 1
    print(f"check-infra: all {r.passed} checks ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
