"""The few Docker operations the realizer needs, through the ``docker`` command line (no SDK:
nothing to pin, and the same commands a person would type to look at what the realizer did).
The one call made every second, listing the node containers, asks the Engine API on the local
socket directly instead: a ``docker ps`` process each second cost more CPU than everything else
the idle harness did."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import subprocess
import time
import urllib.parse

LOG = logging.getLogger("clusterctl.docker")

# never let a proxy from the environment near the Docker CLI (it talks to a unix socket anyway)
_ENV = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}


class DockerError(Exception):
    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.cmd = args
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"docker {' '.join(args[:2])}... failed ({returncode}): {self.stderr}")


def docker(*args: str, timeout: float = 60, check: bool = True, input: bytes | None = None) -> str:
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            ["docker", *args], capture_output=True, timeout=timeout, env=_ENV, input=input, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise DockerError(list(args), -1, f"timed out after {timeout} s") from e
    dt = time.monotonic() - t0
    if dt > 5:
        LOG.info("docker %s took %.1f s", " ".join(args[:2]), dt)
    if check and p.returncode != 0:
        raise DockerError(list(args), p.returncode, p.stderr.decode(errors="replace"))
    return p.stdout.decode(errors="replace")


def docker_bytes(*args: str, timeout: float = 30) -> bytes:
    p = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, env=_ENV, check=False)
    if p.returncode != 0:
        raise DockerError(list(args), p.returncode, p.stderr.decode(errors="replace"))
    return p.stdout + p.stderr


def label_args(labels: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in labels.items():
        out += ["--label", f"{k}={v}"]
    return out


# the socket the CLI would use too (scripts/lib/ensure-docker accepts no other DOCKER_HOST)
DOCKER_SOCKET = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine(method: str, path: str, body: object = None, timeout: float = 20, ok: tuple[int, ...] = (200,)) -> object:
    """One request to the Docker Engine API on the local socket; the decoded JSON answer (None
    for an empty one). DockerError for a status outside ``ok``."""
    conn = _UnixHTTPConnection(DOCKER_SOCKET, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        answer = r.read()
    except (OSError, http.client.HTTPException) as e:
        raise DockerError([method, path], -1, str(e)) from e
    finally:
        conn.close()
    if r.status not in ok:
        try:
            message = str(json.loads(answer).get("message", ""))
        except (ValueError, AttributeError):
            message = answer.decode(errors="replace")
        raise DockerError([method, path], r.status, message)
    return json.loads(answer) if answer.strip() else None


def engine_get(path: str, timeout: float = 20) -> object:
    """GET on the Docker Engine API of the local socket; the decoded JSON answer."""
    return engine("GET", path, timeout=timeout)


def create_and_start(name: str, config: dict, timeout: float = 120) -> int:
    """``docker run -d`` through the Engine API (the CLI has no flag for ``NetworkDisabled``):
    creates the container NAME from CONFIG, starts it and returns its init's host PID."""
    engine("POST", f"/containers/create?name={urllib.parse.quote(name)}", config, timeout=timeout, ok=(201,))
    return start(name, timeout=timeout)


def start(name: str, timeout: float = 60) -> int:
    """Starts a created or stopped container (no-op if it runs); its init's host PID."""
    engine("POST", f"/containers/{urllib.parse.quote(name)}/start", timeout=timeout, ok=(204, 304))
    return pid_of(name)


def pid_of(name: str) -> int:
    """The host PID of a running container's init; DockerError if it does not run."""
    info = engine_get(f"/containers/{urllib.parse.quote(name)}/json")
    pid = int(((info or {}).get("State") or {}).get("Pid") or 0)  # type: ignore[union-attr]
    if pid <= 0:
        raise DockerError(["inspect", name], -1, "the container is not running")
    return pid


def containers(filters: dict[str, str]) -> dict[str, str]:
    """name -> state (running, exited, created, restarting, paused, dead) of matching containers
    (``docker ps -a --filter label=K=V ...``, through the Engine API)."""
    query = urllib.parse.urlencode({
        "all": "1", "filters": json.dumps({"label": [f"{k}={v}" for k, v in filters.items()]}),
    })
    out = {}
    for c in engine_get(f"/containers/json?{query}"):  # type: ignore[union-attr]
        names = c.get("Names") or []
        if names:
            out[names[0].lstrip("/")] = str(c.get("State", "")).strip()
    return out


def networks(filters: dict[str, str]) -> list[dict]:
    """Inspected networks matching the label filters."""
    args = ["network", "ls", "-q"]
    for k, v in filters.items():
        args += ["--filter", f"label={k}={v}"]
    ids = docker(*args, timeout=20).split()
    if not ids:
        return []
    try:
        return json.loads(docker("network", "inspect", *ids, timeout=20))
    except DockerError:  # one vanished in between: inspect one by one
        out = []
        for i in ids:
            try:
                out += json.loads(docker("network", "inspect", i, timeout=20))
            except DockerError:
                pass
        return out


def image_exists(image: str) -> bool:
    """True if the image is there; False if not; DockerError if Docker does not answer."""
    p = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True, timeout=20, env=_ENV, check=False,
    )
    if p.returncode == 0:
        return True
    err = p.stderr.decode(errors="replace")
    if "no such image" in err.lower():
        return False
    raise DockerError(["image", "inspect", image], p.returncode, err)
