"""fastpf.serve in-process: selectors, manifests, REST replies, the upgrade hand-over."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpf.errors import ManifestError, SelectorError
from fastpf.serve.api import Api
from fastpf.serve.cluster import Cluster
from fastpf.serve.replies import Forward, Request, Response, Watch
from fastpf.serve.selectors import parse_field_selector, parse_label_selector
from fastpf.serve.server import Server
from fastpf.types import PodTarget, ServerOptions, UpgradeRequest

TOKEN = "t0ken"
AUTH = [("authorization", f"Bearer {TOKEN}")]

MANIFEST = """
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web, tier: front}
  annotations: {fastpf.io/address: 127.0.0.2}
spec:
  containers:
  - name: main
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Pod
metadata: {name: web-pending, labels: {app: web}}
status: {phase: Pending}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {port: 81}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 0
  selector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [front, back]}
  template: {metadata: {labels: {app: web, tier: front}}}
---
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db, namespace: data}
  spec: {replicas: 0, selector: {matchLabels: {app: db}}}
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata: {name: web-rs}
  spec: {replicas: 0, selector: {matchLabels: {app: web}}}
"""


def _cluster() -> Cluster:
    c = Cluster(explicit=True)
    c.load_text(MANIFEST, "m.yaml")
    return c


def _get(
    api: Api, target: str, method: str = "GET", headers: list[tuple[str, str]] | None = None
) -> Any:
    reply = api.handle(
        Request(method=method, target=target, headers=AUTH if headers is None else headers)
    )
    return reply


def _json(reply: Any) -> Any:
    assert isinstance(reply, Response), reply
    return json.loads(reply.body)


# ---- selectors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app in (web,db)", {"app": "db"}, True),
        ("app notin (web,db)", {"app": "db"}, False),
        ("app notin (web)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=web,tier in (front, back),!canary", {"app": "web", "tier": "back"}, True),
        ("example.com/part-of=x", {"example.com/part-of": "x"}, True),
        ("n>3", {"n": "4"}, True),
        ("n<3", {"n": "x"}, False),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(labels) is expected


@pytest.mark.parametrize("bad", ["app in (a", "=x", "a,,b", "app in a", "a b c"])
def test_label_selector_errors(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_field_selector() -> None:
    pod = {"metadata": {"name": "x", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert parse_field_selector("metadata.name=x,status.phase!=Failed")(pod)
    assert not parse_field_selector("metadata.namespace==other")(pod)
    with pytest.raises(SelectorError, match="field label not supported: spec.foo"):
        parse_field_selector("spec.foo=1")


# ---- manifests ---------------------------------------------------------------------------------
def test_manifest_objects_get_server_fields() -> None:
    c = _cluster()
    pod = c.get("pods", "default", "web-1")
    assert pod is not None
    meta = pod["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"].endswith("Z")
    assert pod["status"]["phase"] == "Running"
    conditions = {cond["type"]: cond["status"] for cond in pod["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["PodScheduled"] == "True"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert pod["spec"]["nodeName"]
    assert c.pod_target(pod) == PodTarget("default", "web-1", meta["uid"], "127.0.0.2")
    pending = c.get("pods", "default", "web-pending")
    assert pending is not None and pending["status"]["phase"] == "Pending"
    assert {x["type"]: x["status"] for x in pending["status"]["conditions"]}["Ready"] == "False"
    svc = c.get("services", "default", "web")
    assert svc is not None and svc["spec"]["ports"][1]["targetPort"] == 81
    assert c.get("statefulsets", "data", "db") is not None
    assert c.get("replicasets", "default", "web-rs") is not None
    assert c.get("pods", "default", "nosuch") is None
    assert c.get("namespaces", "", "data") is not None
    assert c.get("namespaces", "", "nosuch") is None


def test_no_manifest_every_pod_exists() -> None:
    c = Cluster()
    pod = c.get("pods", "any-ns", "any-pod")
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert c.pod_target(pod).address == "127.0.0.2"  # not where port-forward clients listen
    legacy = Cluster(pod_address="127.0.0.1")
    legacy_pod = legacy.get("pods", "any-ns", "any-pod")
    assert legacy_pod is not None and legacy.pod_target(legacy_pod).address == "127.0.0.1"
    assert legacy_pod["status"]["podIP"] == "127.0.0.1" and pod["status"]["podIP"] == "127.0.0.2"
    assert c.get("namespaces", "", "whatever") is not None
    assert c.get("services", "default", "x") is None
    assert c.get("pods", "default", "Not_A_Name") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata: {name: [x\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "unsupported kind 'ConfigMap'"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "Pod has no metadata.name"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x, annotations: {fastpf.io/address: 10.0.0.1}}\n",
            "is not a loopback address",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nstatus: {phase: Sleeping}\n",
            "status.phase 'Sleeping'",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n",
            "containerPort must be 1..65535",
        ),
        ("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\n", "needs apiVersion 'v1'"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
            "duplicate Pod default/x",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n",
            "spec.selector is required",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
            "spec: {selector: {matchExpressions: [{key: a, operator: Near}]}}\n",
            "not a valid label selector operator",
        ),
        ("apiVersion: v1\nkind: List\nitems: 3\n", "needs an 'items' list"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {version: 2}}\n", "quote numbers"),
    ],
)
def test_malformed_manifest_names_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        Cluster.from_files([path])
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="No such file"):
        Cluster.from_files([tmp_path / "nope.yaml"])


# ---- REST --------------------------------------------------------------------------------------
def test_auth_required() -> None:
    api = Api(_cluster(), TOKEN)
    for headers in ([], [("authorization", "Bearer wrong")], [("authorization", f"Basic {TOKEN}")]):
        body = _json(_get(api, "/api", headers=headers))
        assert body["code"] == 401 and body["reason"] == "Unauthorized" and body["kind"] == "Status"
    assert (
        _json(_get(api, "/api", headers=[("authorization", f"bearer {TOKEN}")]))["kind"]
        == "APIVersions"
    )


def test_discovery() -> None:
    api = Api(_cluster(), TOKEN)
    assert _json(_get(api, "/api?timeout=32s"))["versions"] == ["v1"]
    groups = _json(_get(api, "/apis"))
    assert [g["name"] for g in groups["groups"]] == ["apps"]
    core = {r["name"]: r for r in _json(_get(api, "/api/v1"))["resources"]}
    assert {"pods", "services", "namespaces", "pods/portforward"} <= set(core)
    assert core["services"]["shortNames"] == ["svc"] and core["pods"]["namespaced"] is True
    apps = {r["name"]: r for r in _json(_get(api, "/apis/apps/v1"))["resources"]}
    assert {name for name in apps if "/" not in name} == {
        "deployments",
        "replicasets",
        "statefulsets",
    }
    assert (
        apps["deployments/scale"]["group"] == "autoscaling"
        and apps["deployments/scale"]["kind"] == "Scale"
    )
    assert "patch" in core["pods/status"]["verbs"] and "delete" in core["pods"]["verbs"]
    assert _json(_get(api, "/version"))["major"] == "1"


def test_get_and_not_found_messages() -> None:
    api = Api(_cluster(), TOKEN)
    pod = _json(_get(api, "/api/v1/namespaces/default/pods/web-1"))
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    missing = _get(api, "/api/v1/namespaces/default/pods/nosuch")
    assert missing.status == 404
    assert _json(missing)["message"] == 'pods "nosuch" not found'
    assert (
        _json(_get(api, "/apis/apps/v1/namespaces/default/deployments/x"))["message"]
        == 'deployments.apps "x" not found'
    )
    assert (
        _json(_get(api, "/api/v1/namespaces/nosuch"))["message"] == 'namespaces "nosuch" not found'
    )
    assert _get(api, "/api/v1/namespaces/default/nosuchresource").status == 404
    assert _get(api, "/apis/batch/v1").status == 404
    not_allowed = _get(api, "/api/v1/namespaces/default/pods/web-1/portforward", method="DELETE")
    assert not_allowed.status == 405 and _json(not_allowed)["reason"] == "MethodNotAllowed"
    assert (
        _json(_get(api, "/api/v1/namespaces/default", method="DELETE"))["reason"]
        == "MethodNotAllowed"
    )


def test_list_with_selectors() -> None:
    api = Api(_cluster(), TOKEN)

    def names(body: dict[str, Any]) -> list[str]:
        return [i["metadata"]["name"] for i in body["items"]]

    body = _json(_get(api, "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb"))
    assert body["kind"] == "PodList" and names(body) == ["web-1", "web-pending"]
    assert body["metadata"]["resourceVersion"].isdigit()
    assert names(
        _json(
            _get(
                api, "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier+in+%28front%29"
            )
        )
    ) == ["web-1"]
    assert names(
        _json(_get(api, "/api/v1/namespaces/default/pods?fieldSelector=status.phase%3DPending"))
    ) == ["web-pending"]
    assert names(_json(_get(api, "/api/v1/pods"))) == ["web-1", "web-pending"]
    assert names(_json(_get(api, "/apis/apps/v1/statefulsets"))) == ["db"]
    assert _get(api, "/api/v1/namespaces/default/pods?labelSelector=a+in+%28").status == 400
    assert "data" in names(_json(_get(api, "/api/v1/namespaces")))


def test_watch_reply() -> None:
    api = Api(_cluster(), TOKEN)
    reply = _get(
        api, "/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Dweb&timeoutSeconds=5"
    )
    assert isinstance(reply, Watch) and reply.timeout == 5
    events = [json.loads(e) for e in reply.events]
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert events[0]["object"]["kind"] == "Pod"
    current = api.cluster.resource_version
    quiet = _get(api, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={current}")
    assert isinstance(quiet, Watch) and quiet.events == []


def test_watch_resumes_from_a_resource_version_or_expires() -> None:
    """An informer lists, then watches from the list's version: what happened in between is
    replayed (a deletion included); a version older than the kept events gets 410 Expired."""
    c = _cluster()
    api = Api(c, TOKEN)
    listed = _json(_get(api, "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb"))
    version = listed["metadata"]["resourceVersion"]
    c.delete("pods", "default", "web-pending")
    c.replace_status("pods", "default", "web-1", {"phase": "Failed"})
    c.create(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2", "labels": {"app": "web"}}}
    )
    c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other"}})
    reply = _get(
        api,
        f"/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dweb&resourceVersion={version}",
    )
    assert isinstance(reply, Watch)
    assert [
        (e["type"], e["object"]["metadata"]["name"]) for e in map(json.loads, reply.events)
    ] == [("DELETED", "web-pending"), ("MODIFIED", "web-1"), ("ADDED", "web-2")]
    for i in range(1000):  # more events than are kept
        c.replace_status("pods", "default", "other", {"phase": "Failed" if i % 2 else "Running"})
    expired = _get(api, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={version}")
    assert isinstance(expired, Watch) and expired.timeout == 0
    [event] = [json.loads(e) for e in expired.events]
    assert (
        event["type"] == "ERROR"
        and event["object"]["code"] == 410
        and event["object"]["reason"] == "Expired"
    )
    recent = int(c.resource_version) - 1
    resumed = _get(api, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={recent}")
    assert isinstance(resumed, Watch) and [json.loads(e)["type"] for e in resumed.events] == [
        "MODIFIED"
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/pods/web-1/portforward",
        "/portForward/default/web-1",
        "/api/v1beta1/proxy/minions/node1/portForward/default/web-1",
        "/api/v1beta3/proxy/nodes/node1/portForward/default/web-1",
    ],
)
def test_portforward_paths(path: str) -> None:
    api = Api(_cluster(), TOKEN)
    for method in ("GET", "POST"):
        reply = _get(api, path, method=method)
        assert isinstance(reply, Forward)
        assert reply.pod.name == "web-1" and reply.pod.address == "127.0.0.2"
    assert _json(_get(api, path.replace("web-1", "nosuch")))["code"] == 404
    assert _json(_get(api, path, headers=[]))["code"] == 401


def test_portforward_uid_and_phase() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    pod = c.get("pods", "default", "web-1")
    assert pod is not None
    assert isinstance(_get(api, f"/portForward/default/web-1/{pod['metadata']['uid']}"), Forward)
    assert (
        _json(_get(api, "/portForward/default/web-1/other-uid"))["message"] == "pod does not exist"
    )
    assert (
        _json(_get(api, "/api/v1/namespaces/default/pods/web-1/portforward", method="PUT"))["code"]
        == 405
    )
    pending = _json(
        _get(api, "/api/v1/namespaces/default/pods/web-pending/portforward", method="POST")
    )
    assert pending["code"] == 400 and "does not have a host assigned" in pending["message"]
    assert (
        _json(_get(api, "/api/v1/namespaces/default/pods/nosuch/portforward"))["message"]
        == 'pods "nosuch" not found'
    )


# ---- upgrade hand-over (fake engine) ------------------------------------------------------------
class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


def test_upgrade_hands_transport_and_trailing_bytes_to_engine() -> None:
    seen: list[tuple[UpgradeRequest, PodTarget, ServerOptions]] = []

    def fake_accept(
        transport: asyncio.Transport,
        request: UpgradeRequest,
        pod: PodTarget,
        options: ServerOptions,
    ) -> None:
        seen.append((request, pod, options))
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        echo = _Echo()
        transport.set_protocol(echo)
        echo.connection_made(transport)
        echo.data_received(request.trailing)

    async def scenario() -> bytes:
        options = ServerOptions(silent_errors=True)
        server = Server(
            Api(_cluster(), TOKEN), None, options, engine=(fake_accept, None), quiet=True
        )
        bound = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", bound[0][1])
        # A REST request first (keep-alive), then the upgrade with bytes glued behind its head.
        writer.write(
            f"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(
            b"POST /api/v1/namespaces/default/pods/web-1/portforward?ports=1&ports=2,3 HTTP/1.1\r\n"
            b"Host: x\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: portforward.k8s.io\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            + b"\x80\x03\x00\x06garbage"
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        echoed = await asyncio.wait_for(reader.readexactly(len(b"\x80\x03\x00\x06garbage")), 5)
        writer.write(b"more")
        echoed += await asyncio.wait_for(reader.readexactly(4), 5)
        assert not server.connections  # handed over: no longer a REST connection
        writer.close()
        await server.shutdown()
        return echoed

    echoed = asyncio.run(scenario())
    assert echoed == b"\x80\x03\x00\x06garbagemore"
    [(request, pod, options)] = seen
    assert request.method == "POST"
    assert request.path == "/api/v1/namespaces/default/pods/web-1/portforward"
    assert request.query == {"ports": ["1", "2,3"]}
    assert request.header("x-stream-protocol-version") == "portforward.k8s.io"
    assert all(name == name.lower() for name, _ in request.headers)
    assert request.trailing == b"\x80\x03\x00\x06garbage"
    assert pod.address == "127.0.0.2" and options.silent_errors is True


def test_watchlist_initial_events_end_with_bookmark() -> None:
    api = Api(_cluster(), TOKEN)
    reply = _get(
        api,
        "/api/v1/namespaces/default/pods?watch=1&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dweb-1",
    )
    assert isinstance(reply, Watch)
    events = [json.loads(e) for e in reply.events]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_require_peer_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import kubectl

    monkeypatch.setattr(kubectl, "REQUIRE_PEERS", True)
    with pytest.raises(pytest.fail.Exception, match="kubectl 9.99 not found"):
        kubectl.require_peer(kubectl.find_kubectl("9.99"), "kubectl 9.99")
    monkeypatch.setattr(kubectl, "REQUIRE_PEERS", False)
    with pytest.raises(pytest.skip.Exception):
        kubectl.require_peer(None, "kubectl 9.99")
    assert kubectl.require_peer("/bin/true", "x") == "/bin/true"


# ---- safe YAML ------------------------------------------------------------------------------------
def test_aliases_within_bounds_load_unshared() -> None:
    from fastpf.serve.manifests import parse_documents

    text = (
        "defaults: &d {image: x, ports: [{containerPort: 80}]}\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, creationTimestamp: 2024-01-02T03:04:05Z}\n"
        "spec: {containers: [{<<: *d, name: a}, {<<: *d, name: b}]}\n"
    )
    [doc] = parse_documents(text, "a.yaml")
    a, b = doc["spec"]["containers"]
    assert a["ports"] == b["ports"] and a["ports"] is not b["ports"]  # aliases become copies
    assert (
        doc["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"
    )  # a string, as kubectl reads it
    json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
            + "".join(
                f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "once aliases are expanded",
        ),
        ("x: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than 64 levels"),
        ("x: !!set {a, b}\n", "cannot be served as JSON"),
        ("x: .nan\n", "is not a JSON number"),
        ("1: a\n", "mapping key 1 is not a string"),
        ("x: *nope\n", "invalid YAML"),
        ("x: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_unsafe_yaml_is_refused(text: str, message: str) -> None:
    from fastpf.serve.manifests import parse_documents

    with pytest.raises(ManifestError, match=re.escape(message)) as info:
        parse_documents(text, "evil.yaml")
    assert str(info.value).startswith("evil.yaml") and "\n" not in str(info.value)


def test_served_pod_never_holds_shared_or_non_json_values() -> None:
    c = Cluster(explicit=True)
    c.load_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Pod, metadata: {name: p, labels: &l {app: a}},\n"
        "   spec: {containers: [{name: c, env: [{name: A, value: 2024-01-01}]}]}}\n"
        "- {apiVersion: v1, kind: Pod, metadata: {name: q, labels: *l}}\n",
        "m.yaml",
    )
    p, q = c.get("pods", "default", "p"), c.get("pods", "default", "q")
    assert p is not None and q is not None
    assert (
        p["metadata"]["labels"] == q["metadata"]["labels"]
        and p["metadata"]["labels"] is not q["metadata"]["labels"]
    )
    assert p["spec"]["containers"][0]["env"][0]["value"] == "2024-01-01"
    json.dumps(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-3, 70000)
        | st.sampled_from(
            [
                "",
                "v1",
                "apps/v1",
                "Pod",
                "Service",
                "Deployment",
                "StatefulSet",
                "ReplicaSet",
                "List",
                "x",
                "web",
                "127.0.0.1",
                "Running",
                "Pending",
                "http",
                "TCP",
                "In",
                "app",
            ]
        ),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "apiVersion",
                        "kind",
                        "metadata",
                        "name",
                        "namespace",
                        "labels",
                        "annotations",
                        "spec",
                        "status",
                        "containers",
                        "ports",
                        "containerPort",
                        "protocol",
                        "selector",
                        "matchLabels",
                        "matchExpressions",
                        "template",
                        "replicas",
                        "phase",
                        "items",
                        "targetPort",
                        "port",
                        "key",
                        "operator",
                        "values",
                    ]
                ),
                children,
                max_size=6,
            )
        ),
        max_leaves=30,
    )
)
def test_any_manifest_object_is_loaded_or_refused_in_one_line(doc: Any) -> None:
    for candidate in (
        doc,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": doc},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": doc},
    ):
        try:
            Cluster(explicit=True).load_objects([("f.yaml: document 1", candidate)])
        except ManifestError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("f.yaml: document 1")


# ---- server-side printing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
            "application/json",
            "v1",
        ),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/json", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io", None),
        (None, None),
    ],
)
def test_table_is_served_when_asked(accept: str | None, version: str | None) -> None:
    from fastpf.serve.table import table_version

    assert table_version(accept) == version
    api = Api(_cluster(), TOKEN)
    headers = AUTH + ([("accept", accept)] if accept else [])
    body = _json(
        api.handle(Request("GET", "/api/v1/namespaces/default/pods?includeObject=Object", headers))
    )
    if version is None:
        assert body["kind"] == "PodList"
        return
    assert body["kind"] == "Table" and body["apiVersion"] == f"meta.k8s.io/{version}"
    assert [c["name"] for c in body["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert [r["cells"][:4] for r in body["rows"]] == [
        ["web-1", "1/1", "Running", "0"],
        ["web-pending", "0/1", "Pending", "0"],
    ]
    assert body["rows"][0]["object"]["kind"] == "Pod"  # includeObject=Object
