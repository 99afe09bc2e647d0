"""The official Kubernetes Python client against a clusterctl cluster, as a user's script uses it.

Run by tests/commands_localstack.rs with the harness venv's Python (which pins `kubernetes`) and
KUBECONFIG pointing at the cluster: python official_client.py POD NAMESPACE. Every call goes
through the client's models, which refuse answers that lack a field Kubernetes always fills.
Prints one line per step; any failure raises (exit status 1).
"""

import sys
import time
import uuid

from kubernetes import client, config, watch
from kubernetes.stream import portforward, stream


def main(pod_name: str, namespace: str) -> None:
    config.load_kube_config()
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    nodes = core.list_node()
    assert nodes.items, "no nodes"
    info = nodes.items[0].status.node_info
    print(f"list_node: {len(nodes.items)} nodes, kubelet {info.kubelet_version}, runtime {info.container_runtime_version}")

    pods = core.list_namespaced_pod(namespace)
    running = [p for p in pods.items if p.status.container_statuses]
    assert running, "no pod with container statuses"
    print(f"list_namespaced_pod: {len(pods.items)} pods, imageID {running[0].status.container_statuses[0].image_id}")

    events = 0
    for event in watch.Watch().stream(core.list_namespaced_pod, namespace, timeout_seconds=5):
        assert event["type"] in ("ADDED", "MODIFIED", "DELETED"), event["type"]
        events += 1
        if events >= 1:
            break
    assert events, "the watch gave no event"
    print(f"watch pods: {events} event(s)")

    name = f"py-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "clusterctl-busybox:latest", "command": ["sleep", "3600"]}]},
            },
        },
    }
    created = apps.create_namespaced_deployment(namespace, body)
    print(f"create_namespaced_deployment: {created.metadata.name} uid {created.metadata.uid}")
    try:
        patched = apps.patch_namespaced_deployment(name, namespace, {"metadata": {"labels": {"patched": "yes"}}})
        assert patched.metadata.labels.get("patched") == "yes", patched.metadata.labels
        print("patch_namespaced_deployment: label set")
    finally:
        apps.delete_namespaced_deployment(name, namespace)
    for _ in range(50):
        try:
            apps.read_namespaced_deployment(name, namespace)
        except client.exceptions.ApiException as e:
            assert e.status == 404, e
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"deployment {name} still there after delete")
    print("delete_namespaced_deployment: gone")

    log = core.read_namespaced_pod_log(pod_name, namespace, tail_lines=2)
    assert log.strip(), "an empty log"
    print(f"read_namespaced_pod_log: {len(log.splitlines())} lines")

    out = stream(core.connect_get_namespaced_pod_exec, pod_name, namespace, command=["sh", "-c", "echo from-exec"], stderr=True, stdin=False, stdout=True, tty=False)
    assert out.strip() == "from-exec", repr(out)
    print("exec (WebSocket): from-exec")

    # port-forward in the WebSocket channel protocol: an HTTP request to the pod's port 80.
    forward = portforward(core.connect_get_namespaced_pod_portforward, pod_name, namespace, ports="80")
    sock = forward.socket(80)
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    assert status_line.startswith("HTTP/1.") and " 200 " in status_line, answer[:200]
    assert forward.error(80) is None, forward.error(80)
    forward.close()
    print(f"port-forward (WebSocket): {status_line}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "default")
