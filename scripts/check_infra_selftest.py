#!/usr/bin/env python3
"""Proves that scripts/check_infra.py can fail: each case breaks one deployment file in a
copy of the repository, runs the check group that covers it, and expects it to fail
with a given message. Run through `scripts/check-infra.sh --self-test`.

Every case names the exact text it replaces (its first occurrence), so a case whose file
changed fails loudly instead of silently testing nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# (check group, file, text to replace, replacement, expected in the failure output)
CASES = [
    # Kubernetes schemas (strict: an unknown field is an error)
    ("k8s", "infra/k8s/base/worker.yaml", "        livenessProbe:\n", "        livenesProbe:\n",
     "Additional properties are not allowed ('livenesProbe' was unexpected)"),
    ("k8s", "infra/k8s/base/backup-cronjobs.yaml", "startingDeadlineSeconds: 3600",
     "startingDeadlineSeconds: one hour", "'one hour' is not of type 'integer'"),
    # KEDA CRD schemas
    ("k8s", "infra/k8s/overlays/aks-workload-identity/keda.yaml", "  maxReplicaCount: 20\n",
     "  maxReplicas: 20\n", "('maxReplicas' was unexpected)"),
    ("k8s", "infra/k8s/overlays/aks-workload-identity/keda.yaml", "    provider: azure-workload\n",
     "    provider: azure-pod-identity\n", "is not one of"),
    # project rules on the rendered manifests
    ("k8s", "infra/k8s/base/worker.yaml", "terminationGracePeriodSeconds: 40",
     "terminationGracePeriodSeconds: 30", "leaves less than 10 s after the"),
    ("k8s", "infra/k8s/base/worker.yaml", "- name: LAKEVAULT_PREFETCH", "- name: LAKEVAULT_PREFETCHES",
     "reads no variable LAKEVAULT_PREFETCHES"),
    ("k8s", "infra/k8s/base/worker.yaml", "path: /readyz", "path: /ready",
     "readinessProbe is not GET /readyz on 8081"),
    ("k8s", "infra/k8s/base/worker.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false",
     "readOnlyRootFilesystem is not true"),
    ("k8s", "infra/k8s/overlays/aks-workload-identity/keda.yaml", '      queueLength: "2"\n',
     '      queueLenght: "2"\n', "azure-queue metadata has unknown keys ['queueLenght']"),
    ("k8s", "infra/k8s/overlays/aks-workload-identity/keda.yaml", "queueName: lakevault-copy ",
     "queueName: lakevault-copies ", "is not the config's [queue].name"),
    ("k8s", "infra/k8s/base/backup-cronjobs.yaml", '"--output", "json"', '"--outptu", "json"',
     "has no flag --outptu"),
    ("k8s", "infra/k8s/base/backup-cronjobs.yaml", "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow",
     "concurrencyPolicy is not Forbid"),
    ("k8s", "infra/k8s/overlays/sas-files/kustomization.yaml", "mountPath: /var/run/secrets/lakevault/sas",
     "mountPath: /var/run/secrets/lakevault/tokens", "is not in a mounted Secret"),
    ("k8s", "infra/k8s/overlays/aks-workload-identity/kustomization.yaml", "namespace: lakevault\n", "",
     "namespace is `None`"),
    ("k8s", "infra/k8s/overlays/aks-workload-identity/serviceaccounts.yaml",
     "client-id: 00000000-0000-0000-0000-000000000002", "client-id: 00000000-0000-0000-0000-000000000001",
     "workers and coordinator must use different identities"),
    # Dockerfiles
    ("docker", "docker/worker.Dockerfile", 'ENTRYPOINT ["/usr/local/bin/lakevault-worker"]',
     "ENTRYPOINT /usr/local/bin/lakevault-worker", "ENTRYPOINT is in shell form"),
    ("docker", "docker/worker.Dockerfile", "USER 65532:65532", "USER root", "is not a numeric non-root UID"),
    ("docker", "docker/coordinator.Dockerfile", "--bin lakevault-coordinator \\",
     "--bin lakevault-coordinater \\", "is not a binary of the workspace"),
    ("docker", "docker/worker.Dockerfile", "COPY . .\n",
     "COPY . .\nADD https://example.com/tool.tar.gz /opt/\n", "ADD of a remote URL"),
    ("docker", "docker/worker.Dockerfile", "FROM gcr.io/distroless/cc-debian12:nonroot",
     "FROM gcr.io/distroless/cc-debian12", "has no tag or digest"),
    ("docker", "docker/coordinator.Dockerfile", "    LAKEVAULT_LISTEN=0.0.0.0:8080", "    LAKEVAULT_LISTEN_ADDR=0.0.0.0:8080",
     "ENV LAKEVAULT_LISTEN_ADDR: no `lakevault-coordinator` command reads it"),
    ("docker", ".dockerignore", "\ntarget\n", "\n", "does not exclude target"),
    # systemd unit
    ("systemd", "infra/vmss/lakevault-worker.service", "Restart=on-failure", "Restart=on-failur",
     "Failed to parse service restart specifier"),
    ("systemd", "infra/vmss/lakevault-worker.service", "KillSignal=SIGTERM", "KilSignal=SIGTERM",
     "Unknown key 'KilSignal'"),
    ("systemd", "infra/vmss/lakevault-worker.service", "TimeoutStopSec=45", "TimeoutStopSec=30",
     "leaves less than 10 s after the"),
    ("systemd", "infra/vmss/lakevault-worker.service", "CapabilityBoundingSet=\n", "",
     "(systemd-analyze security)"),
    # cloud-init
    ("cloudinit", "infra/vmss/cloud-init.yaml", "\nruncmd:\n", "\nruncommand:\n",
     "(cloud-init schema)"),
    ("cloudinit", "infra/vmss/cloud-init.yaml", "      LAKEVAULT_PREFETCH=4\n", "      LAKEVAULT_PREFETCHING=4\n",
     "reads no variable LAKEVAULT_PREFETCHING"),
    ("cloudinit", "infra/vmss/lakevault.toml", 'name = "lakevault-copy"', 'name = "lakevault-queue"',
     "differs from infra/vmss/lakevault.toml"),
    ("cloudinit", "infra/vmss/install-worker.sh", 'if [ "$got" != "$WORKER_SHA256" ]; then',
     'if false; then', "installed a binary whose checksum does not match"),
    # Bicep
    ("bicep", "infra/bicep/modules/queue-access.bicep", "param grants array\n", "param grants array {\n",
     "does not parse"),
    ("bicep", "infra/bicep/main.bicep", "    queueName: poisonQueueName\n", "    queue: poisonQueueName\n",
     "passes `queue`, which modules/queue-access.bicep does not declare"),
    ("bicep", "infra/bicep/modules/storage-account.bicep", "minimumTlsVersion: 'TLS1_2'",
     "minimumTlsVersion: 'TLS1_0'", "minimumTlsVersion is not TLS1_2"),
    ("bicep", "infra/bicep/main.bicep", "name: '${namePrefix}-worker'", "name: '${nameprefix}-worker'",
     "`${nameprefix}` names nothing declared"),
    ("bicep", "infra/bicep/main.bicepparam", "param sourceAccountName = 'contosolake'\n",
     "param sourceAccount = 'contosolake'\n", "param sourceAccount is not declared in main.bicep"),
]

COPIED = [".dockerignore", "Cargo.toml", "Cargo.lock", "docker", "infra", "scripts",
          "common/Cargo.toml", "plan/Cargo.toml", "coordinator/Cargo.toml", "worker/Cargo.toml", "tests/Cargo.toml",
          "common/src/lib.rs", "coordinator/src/main.rs", "worker/src/main.rs", "tests/src/bin"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--bin-dir", type=Path, required=True)
    args = ap.parse_args()
    root = args.root.resolve()
    failures = []
    caught = 0
    with tempfile.TemporaryDirectory(prefix="lakevault-check-infra-") as tmp:
        copy = Path(tmp)
        for rel in COPIED:
            src, dst = root / rel, copy / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        checker = copy / "scripts/check_infra.py"
        base = [sys.executable, str(checker), "--root", str(copy), "--bin-dir", str(args.bin_dir)]
        for group, rel, old, new, expected in CASES:
            path = copy / rel
            original = path.read_text()
            label = f"{rel}: {old.strip()!r} -> {new.strip()!r}"
            if old not in original:
                failures.append(f"{label}: the text to replace is not in the file")
                continue
            path.write_text(original.replace(old, new, 1))
            try:
                p = subprocess.run([*base, "--only", group], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            finally:
                path.write_text(original)
            out = p.stdout + p.stderr
            if p.returncode != 1:
                failures.append(f"{label}: check-infra {group} exited {p.returncode}, expected 1\n{out[-2000:]}")
            elif expected not in out:
                failures.append(f"{label}: failure output lacks {expected!r}\n{out[-2000:]}")
            else:
                caught += 1
                print(f"ok  {group:9} {label}", file=sys.stderr)
        # The untouched copy passes, so the failures above come from the mutations alone.
        p = subprocess.run(base, capture_output=True, text=True)
        if p.returncode != 0:
            failures.append(f"the unmodified copy fails:\n{(p.stdout + p.stderr)[-2000:]}")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"check-infra self-test: {caught} of {len(CASES)} broken files caught", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
