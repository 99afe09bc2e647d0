"""Settings of the realizer, from the environment that ``localstack/up`` gives LocalStack.

| variable                          | meaning                                                          |
|-----------------------------------|------------------------------------------------------------------|
| CLUSTERCTL_HARNESS_STATE          | the harness state folder (localstack/.state); node metadata lives |
|                                   | in <state>/nodes/<instance-id>                                   |
| CLUSTERCTL_HARNESS_OWNER          | value of the ``clusterctl.localstack`` label on every Docker     |
|                                   | object the realizer makes (default: the state folder)            |
| CLUSTERCTL_LOCALSTACK_DIR         | the localstack/ folder (images.json lives there)                 |
| CLUSTERCTL_NODE_CLOUD_ENDPOINT    | URL written to /etc/clusterctl-instance/cloud-endpoint           |
| CLUSTERCTL_NODE_IMAGE             | image for AMIs without a mapping (clusterctl-node:latest)        |
| CLUSTERCTL_NODE_DOCKER_STORAGE    | ``volume`` (default) or ``tmpfs``: the node's /var/lib/docker     |
| CLUSTERCTL_NODE_READY_TIMEOUT     | seconds a node may take until sshd answers (default 180)         |
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess

LABEL_HARNESS = "clusterctl.harness"
LABEL_OWNER = "clusterctl.localstack"
LABEL_ROLE = "clusterctl.role"
LABEL_INSTANCE = "clusterctl.instance-id"
LABEL_VPC = "clusterctl.vpc-id"
LABEL_ACCOUNT = "clusterctl.account"
LABEL_REGION = "clusterctl.region"
LABEL_IMAGE_ID = "clusterctl.image-id"

DEFAULT_NODE_IMAGE = "clusterctl-node:latest"


def state_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CLUSTERCTL_HARNESS_STATE") or os.getcwd()).resolve()


def owner() -> str:
    return os.environ.get("CLUSTERCTL_HARNESS_OWNER") or str(state_dir())


def owner_short() -> str:
    """A short, stable tag of the owner, for Docker object names."""
    return hashlib.sha256(owner().encode()).hexdigest()[:6]


def localstack_dir() -> pathlib.Path:
    d = os.environ.get("CLUSTERCTL_LOCALSTACK_DIR")
    return pathlib.Path(d).resolve() if d else state_dir().parent


def nodes_dir() -> pathlib.Path:
    return state_dir() / "nodes"


def cloud_endpoint() -> str:
    return os.environ.get("CLUSTERCTL_NODE_CLOUD_ENDPOINT", "")


def docker_bridge_addr() -> str:
    """docker0's IPv4 address (172.17.0.1 normally; empty without that bridge): where nodes reach
    this machine's harness services (LocalStack, the registry, the ECR stand-in). The same question
    as ``ls_docker_bridge_addr`` in lib/common.sh; asked when needed, not per request."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "docker0"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in out.splitlines():
        cols = line.split()
        if "inet" in cols:
            return cols[cols.index("inet") + 1].split("/")[0]
    return ""


def node_image() -> str:
    return os.environ.get("CLUSTERCTL_NODE_IMAGE") or DEFAULT_NODE_IMAGE


def node_docker_storage() -> str:
    v = os.environ.get("CLUSTERCTL_NODE_DOCKER_STORAGE", "volume")
    return v if v in ("volume", "tmpfs") else "volume"


def ready_timeout() -> float:
    return float(os.environ.get("CLUSTERCTL_NODE_READY_TIMEOUT", "180"))


def realizer_enabled() -> bool:
    return os.environ.get("PROVIDER_OVERRIDE_EC2") == "realizer"


def base_labels(role: str) -> dict[str, str]:
    return {LABEL_HARNESS: "1", LABEL_OWNER: owner(), LABEL_ROLE: role}
