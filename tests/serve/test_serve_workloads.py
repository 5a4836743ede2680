"""fastpf serve in-process: workloads make pods, and the write API (issue 12's test hooks) changes
the cluster with the events a watch sees. Process-level checks with real kubectl and the fastpf
client are in test_serve_admin.py."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpf.errors import ManifestError, PatchError
from fastpf.serve import patch
from fastpf.serve.api import Api
from fastpf.serve.cluster import Cluster, Event
from fastpf.serve.manifests import load_files, parse_documents, split_objects
from fastpf.serve.replies import Forward, Request, Response, Watch
from fastpf.serve.workloads import SAFE_ALPHABET, template_hash

TOKEN = "t0ken"
AUTH = [("authorization", f"Bearer {TOKEN}")]
SAFE = f"[{SAFE_ALPHABET}]"
DEPLOY_POD = re.compile(rf"^web-({SAFE}{{10}})-{SAFE}{{5}}$")

WORKLOADS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {fastpf.io/address: 127.0.0.3}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}, annotations: {note: from-template}}
    spec: {containers: [{name: main, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}, annotations: {fastpf.io/address: 127.0.0.4}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 1
  selector: {matchLabels: {app: solo}}
  template: {metadata: {labels: {app: solo}}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}
"""


def _cluster(text: str = WORKLOADS) -> Cluster:
    c = Cluster(explicit=True)
    c.load_text(text, "w.yaml")
    return c


def _call(
    api: Api,
    method: str,
    target: str,
    body: Any = None,
    content_type: str = "application/json",
    headers: list[tuple[str, str]] | None = None,
) -> Any:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = (AUTH if headers is None else headers) + [("content-type", content_type)]
    return api.handle(Request(method=method, target=target, headers=hdrs, body=raw))


def _json(reply: Any, status: int | None = None) -> Any:
    assert isinstance(reply, Response), reply
    if status is not None:
        assert reply.status == status, reply.body
    return json.loads(reply.body)


def _pods(c: Cluster, selector: str | None = None) -> list[dict[str, Any]]:
    pods = c.list_objects("pods", "default")
    if selector is not None:
        key, _, value = selector.partition("=")
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(key) == value]
    return pods


def _names(pods: list[dict[str, Any]]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods)


PODS = "/api/v1/namespaces/default/pods"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments/web"


# ---- workloads make pods -------------------------------------------------------------------------
def test_deployment_makes_replicaset_and_pods_like_kubernetes() -> None:
    c = _cluster()
    deploy = c.get("deployments", "default", "web")
    assert deploy is not None
    [rs] = [
        r
        for r in c.list_objects("replicasets", "default")
        if r["metadata"]["name"].startswith("web-")
    ]
    digest = template_hash(deploy["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{digest}" and re.fullmatch(f"{SAFE}{{10}}", digest)
    assert rs["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": deploy["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": digest}
    pods = _pods(c, "app=web")
    assert len(pods) == 3 and len(set(_names(pods))) == 3
    for pod in pods:
        meta = pod["metadata"]
        m = DEPLOY_POD.match(meta["name"])
        assert m and m.group(1) == digest, meta["name"]
        assert meta["labels"] == {"app": "web", "tier": "front", "pod-template-hash": digest}
        assert meta["annotations"]["note"] == "from-template"
        assert meta["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert meta["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
        assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "127.0.0.3"
        assert c.pod_target(pod).address == "127.0.0.3"  # the workload's annotation
        assert pod["spec"]["containers"][0]["ports"][0]["name"] == "http"
    assert deploy["status"]["readyReplicas"] == 3 and deploy["status"]["updatedReplicas"] == 3
    assert rs["status"]["readyReplicas"] == 3


def test_statefulset_and_bare_replicaset_pods() -> None:
    c = _cluster()
    sts = c.get("statefulsets", "default", "db")
    assert sts is not None
    pods = _pods(c, "app=db")
    assert _names(pods) == ["db-0", "db-1"]
    for pod in pods:
        assert pod["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"]
        assert (
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"]
            == pod["metadata"]["name"]
        )
        assert c.pod_target(pod).address == "127.0.0.4"  # the template's annotation
    [solo] = _pods(c, "app=solo")
    assert re.fullmatch(f"rs-{SAFE}{{5}}", solo["metadata"]["name"])
    assert solo["metadata"]["generateName"] == "rs-" and c.pod_target(solo).address == "127.0.0.2"
    assert c.get("statefulsets", "default", "db")["status"]["readyReplicas"] == 2  # type: ignore[index]


def test_template_hash_is_stable_and_ten_characters() -> None:
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main"}]}}
    assert template_hash(template) == template_hash(json.loads(json.dumps(template)))
    hashes = {template_hash({"metadata": {"labels": {"n": str(i)}}}) for i in range(200)}
    assert len(hashes) == 200 and all(re.fullmatch(f"{SAFE}{{10}}", h) for h in hashes)


# ---- the write API ----------------------------------------------------------------------------------
def test_delete_owned_pod_is_replaced_under_a_new_name() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    before = _names(_pods(c, "app=web"))
    gone = _json(_call(api, "DELETE", f"{PODS}/{before[0]}"), 200)
    assert gone["metadata"]["name"] == before[0]
    after = _names(_pods(c, "app=web"))
    assert len(after) == 3 and before[0] not in after and set(before[1:]) <= set(after)
    assert (
        _json(_call(api, "GET", f"{PODS}/{before[0]}"), 404)["message"]
        == f'pods "{before[0]}" not found'
    )
    # A StatefulSet pod comes back under its own name, as a new pod (new uid).
    old_uid = c.get("pods", "default", "db-0")["metadata"]["uid"]  # type: ignore[index]
    _json(_call(api, "DELETE", f"{PODS}/db-0"), 200)
    assert c.get("pods", "default", "db-0")["metadata"]["uid"] != old_uid  # type: ignore[index]


@pytest.mark.parametrize(
    ("method", "target", "content_type", "body"),
    [
        ("PATCH", f"{DEPLOY}/scale", patch.MERGE, {"spec": {"replicas": 5}}),
        (
            "PUT",
            f"{DEPLOY}/scale",
            "application/json",
            {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {"name": "web"},
                "spec": {"replicas": 5},
            },
        ),
        ("PATCH", DEPLOY, patch.STRATEGIC, {"spec": {"replicas": 5}}),
        (
            "PATCH",
            DEPLOY,
            patch.JSON_PATCH,
            [{"op": "replace", "path": "/spec/replicas", "value": 5}],
        ),
    ],
)
def test_scale_deployment(method: str, target: str, content_type: str, body: Any) -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    reply = _json(_call(api, method, target, body, content_type), 200)
    if target.endswith("/scale"):
        assert reply["kind"] == "Scale" and reply["spec"]["replicas"] == 5
        assert reply["status"]["selector"] == "app=web"
    assert len(_pods(c, "app=web")) == 5
    _json(_call(api, "PATCH", f"{DEPLOY}/scale", {"spec": {"replicas": 1}}, patch.MERGE), 200)
    assert len(_pods(c, "app=web")) == 1
    _json(_call(api, "PATCH", f"{DEPLOY}/scale", {"spec": {"replicas": 0}}, patch.MERGE), 200)
    assert _pods(c, "app=web") == []
    _json(_call(api, "PATCH", f"{DEPLOY}/scale", {"spec": {"replicas": 2}}, patch.MERGE), 200)
    assert len(_pods(c, "app=web")) == 2
    bad = _json(
        _call(api, "PATCH", f"{DEPLOY}/scale", {"spec": {"replicas": 5000}}, patch.MERGE), 422
    )
    assert "0..1000" in bad["message"]
    scale = _json(_call(api, "GET", "/apis/apps/v1/namespaces/default/statefulsets/db/scale"), 200)
    assert scale["spec"]["replicas"] == 2


def test_new_template_rolls_out_a_new_replicaset() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    old = _names(_pods(c, "app=web"))
    change = {"spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "back"}}}}}
    _json(_call(api, "PATCH", DEPLOY, change, patch.STRATEGIC), 200)
    new = _pods(c, "app=web")
    assert len(new) == 3 and not set(old) & set(_names(new))
    assert all(p["metadata"]["labels"]["tier"] == "back" for p in new)
    sets = {
        r["metadata"]["name"]: r["spec"]["replicas"]
        for r in c.list_objects("replicasets", "default")
        if r["metadata"]["name"].startswith("web-")
    }
    assert sorted(sets.values()) == [0, 3]  # the old ReplicaSet is kept at 0, as Kubernetes does
    revisions = sorted(
        r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for r in c.list_objects("replicasets", "default")
        if r["metadata"]["name"].startswith("web-")
    )
    assert revisions == ["1", "2"]


def test_delete_deployment_collects_its_replicasets_and_pods() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    _json(_call(api, "DELETE", DEPLOY), 200)
    assert _pods(c, "app=web") == []
    assert [r["metadata"]["name"] for r in c.list_objects("replicasets", "default")] == ["rs"]


def test_create_pod_json_and_yaml() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "extra", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 9000}]}]},
    }
    created = _json(_call(api, "POST", PODS, pod), 201)
    assert created["metadata"]["uid"] and created["status"]["phase"] == "Running"
    assert "extra" in _names(_pods(c, "app=web"))
    again = _json(_call(api, "POST", PODS, pod), 409)
    assert again["reason"] == "AlreadyExists" and again["message"] == 'pods "extra" already exists'
    yaml_pod = (
        b"apiVersion: v1\nkind: Pod\nmetadata: {generateName: gen-}\nstatus: {phase: Pending}\n"
    )
    made = _json(_call(api, "POST", PODS, yaml_pod, "application/yaml"), 201)
    assert (
        re.fullmatch(f"gen-{SAFE}{{5}}", made["metadata"]["name"])
        and made["status"]["phase"] == "Pending"
    )
    wrong_ns = dict(pod, metadata={"name": "x", "namespace": "other"})
    assert _json(_call(api, "POST", PODS, wrong_ns), 400)["reason"] == "BadRequest"
    invalid = _json(
        _call(api, "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {}}), 422
    )
    assert invalid["reason"] == "Invalid" and "metadata.name" in invalid["message"]
    assert _json(_call(api, "POST", PODS, b"{not json"), 400)["reason"] == "BadRequest"
    bomb = (
        b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        + b"".join(
            f"{k}: &{k} [{', '.join(['*' + p] * 9)}]\n".encode()
            for p, k in zip("bcdefgh", "cdefghi", strict=True)
        )
    )
    assert _json(_call(api, "POST", PODS, bomb, "application/yaml"), 400)["reason"] == "BadRequest"


def test_status_patch_moves_a_pod_out_of_and_back_into_running() -> None:
    c = _cluster("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    api = Api(c, TOKEN)
    forward = "/api/v1/namespaces/default/pods/p/portforward"
    assert isinstance(_call(api, "GET", forward), Forward)
    pending = _json(
        _call(api, "PATCH", f"{PODS}/p/status", {"status": {"phase": "Pending"}}, patch.MERGE), 200
    )
    assert pending["status"]["phase"] == "Pending"
    ready = {x["type"]: x["status"] for x in pending["status"]["conditions"]}
    assert ready["Ready"] == "False" and pending["status"]["containerStatuses"][0]["ready"] is False
    refused = _json(_call(api, "GET", forward), 400)
    assert "is not running (phase Pending)" in refused["message"]
    _json(
        _call(api, "PATCH", f"{PODS}/p/status", {"status": {"phase": "Running"}}, patch.STRATEGIC),
        200,
    )
    assert isinstance(_call(api, "GET", forward), Forward)
    bad = _json(
        _call(api, "PATCH", f"{PODS}/p/status", {"status": {"phase": "Sleeping"}}, patch.MERGE), 422
    )
    assert "Sleeping" in bad["message"]
    # The main resource ignores status; labels and the address annotation change.
    moved = {
        "metadata": {"labels": {"app": "x"}, "annotations": {"fastpf.io/address": "127.0.0.9"}},
        "status": {"phase": "Failed"},
    }
    pod = _json(_call(api, "PATCH", f"{PODS}/p", moved, patch.MERGE), 200)
    assert pod["status"]["phase"] == "Running" and pod["metadata"]["labels"] == {"app": "x"}
    assert pod["status"]["podIP"] == "127.0.0.9"
    reply = _call(api, "GET", forward)
    assert isinstance(reply, Forward) and reply.pod.address == "127.0.0.9"
    assert (
        _json(_call(api, "PATCH", f"{PODS}/p", {}, "application/apply-patch+yaml"), 415)["code"]
        == 415
    )


def test_writes_need_the_token() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    for method, target in (
        ("DELETE", f"{PODS}/db-0"),
        ("POST", PODS),
        ("PATCH", f"{PODS}/db-0/status"),
        ("PATCH", f"{DEPLOY}/scale"),
    ):
        for headers in ([], [("authorization", "Bearer wrong")]):
            assert (
                _json(_call(api, method, target, {}, patch.MERGE, headers=headers), 401)["reason"]
                == "Unauthorized"
            )
    assert c.get("pods", "default", "db-0") is not None


def test_without_manifests_pods_can_be_deleted_changed_and_created() -> None:
    c = Cluster()
    api = Api(c, TOKEN)
    assert isinstance(_call(api, "GET", f"{PODS}/anything/portforward"), Forward)
    assert _json(_call(api, "GET", PODS), 200)["items"] == []
    _json(_call(api, "DELETE", f"{PODS}/anything"), 200)
    assert _json(_call(api, "GET", f"{PODS}/anything/portforward"), 404)["code"] == 404
    _json(
        _call(api, "PATCH", f"{PODS}/other/status", {"status": {"phase": "Failed"}}, patch.MERGE),
        200,
    )
    assert [p["metadata"]["name"] for p in _json(_call(api, "GET", PODS))["items"]] == ["other"]
    _json(
        _call(
            api, "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "anything"}}
        ),
        201,
    )
    assert isinstance(_call(api, "GET", f"{PODS}/anything/portforward"), Forward)


def test_graceful_delete_is_terminating_then_gone() -> None:
    async def scenario() -> None:
        c = _cluster()
        api = Api(c, TOKEN)
        name = _names(_pods(c, "app=web"))[0]
        body = _json(_call(api, "DELETE", f"{PODS}/{name}?gracePeriodSeconds=1"), 200)
        assert body["metadata"]["deletionTimestamp"]
        pods = _pods(c, "app=web")
        assert len(pods) == 4  # the replacement exists while the old pod terminates
        assert len([p for p in pods if "deletionTimestamp" not in p["metadata"]]) == 3
        for _ in range(40):  # bounded: the pod goes after 1 s
            if c.get("pods", "default", name) is None:
                break
            await asyncio.sleep(0.1)
        assert c.get("pods", "default", name) is None and len(_pods(c, "app=web")) == 3

    asyncio.run(scenario())


# ---- watch events --------------------------------------------------------------------------------
def test_watch_sees_added_modified_deleted() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    reply = _call(
        api, "GET", f"{PODS}?watch=true&labelSelector=app%3Ddb&resourceVersion={c.resource_version}"
    )
    assert isinstance(reply, Watch) and reply.events == [] and reply.subscription is not None
    lines: list[bytes] = []
    detach = reply.subscription.attach(lines.append)
    _json(
        _call(api, "PATCH", f"{PODS}/db-1/status", {"status": {"phase": "Pending"}}, patch.MERGE),
        200,
    )
    _json(
        _call(api, "PATCH", f"{PODS}/db-0", {"metadata": {"labels": {"app": "gone"}}}, patch.MERGE),
        200,
    )
    _json(_call(api, "DELETE", f"{PODS}/db-1"), 200)
    _json(_call(api, "DELETE", f"{PODS}/{_names(_pods(c, 'app=web'))[0]}"), 200)  # not selected
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in map(json.loads, lines)]
    # db-1 went Pending (MODIFIED); db-0 left the selector (DELETED for this watch) and was
    # released by its StatefulSet, which cannot make a new db-0 while the name is taken (as in
    # Kubernetes); db-1 was deleted and came back.
    assert events == [
        ("MODIFIED", "db-1"),
        ("DELETED", "db-0"),
        ("DELETED", "db-1"),
        ("ADDED", "db-1"),
    ]
    assert "ownerReferences" not in c.get("pods", "default", "db-0")["metadata"]  # type: ignore[index]
    first = json.loads(lines[0])["object"]
    assert (
        first["status"]["phase"] == "Pending" and int(first["metadata"]["resourceVersion"]) > 1000
    )
    detach()
    _json(_call(api, "DELETE", f"{PODS}/db-1"), 200)
    assert len(lines) == 4
    # A ReplicaSet replaces a pod relabelled away from it.
    stray = _names(_pods(c, "app=web"))[0]
    _json(
        _call(
            api, "PATCH", f"{PODS}/{stray}", {"metadata": {"labels": {"app": "away"}}}, patch.MERGE
        ),
        200,
    )
    assert len(_pods(c, "app=web")) == 3 and stray not in _names(_pods(c, "app=web"))


def test_cluster_events_order_and_listener_failure_is_contained() -> None:
    c = _cluster()
    seen: list[Event] = []

    def failing(event: Event) -> None:
        raise ZeroDivisionError("a listener that fails")

    c.subscribe(failing)
    c.subscribe(seen.append)
    c.scale("deployments", "default", "web", 4)
    kinds = [(e.type, e.plural) for e in seen]
    assert kinds[0] == ("MODIFIED", "deployments") and ("ADDED", "pods") in kinds
    assert c.get("deployments", "default", "web")["status"]["replicas"] == 4  # type: ignore[index]


# ---- reload -------------------------------------------------------------------------------------
def test_reload_adds_changes_and_deletes_manifest_objects() -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    _json(
        _call(api, "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine"}}),
        201,
    )
    web_uid = c.get("deployments", "default", "web")["metadata"]["uid"]  # type: ignore[index]
    db_pods = {p["metadata"]["uid"] for p in _pods(c, "app=db")}
    changed = WORKLOADS.replace("replicas: 3", "replicas: 1").split("---\nkind: ReplicaSet")[0]
    changed = "\n---\n".join(d for d in changed.split("\n---\n") if "kind: ReplicaSet" not in d)
    changed += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: fresh}\n"
    summary = c.reload(split_objects(parse_documents(changed, "w.yaml"), "w.yaml"))
    assert summary == "1 added, 1 changed, 1 deleted"
    assert c.get("deployments", "default", "web")["metadata"]["uid"] == web_uid  # type: ignore[index]
    assert len(_pods(c, "app=web")) == 1 and _pods(c, "app=solo") == []
    assert {p["metadata"]["uid"] for p in _pods(c, "app=db")} == db_pods  # unchanged: untouched
    assert (
        c.get("pods", "default", "mine") is not None
        and c.get("pods", "default", "fresh") is not None
    )
    before = c.resource_version
    with pytest.raises(ManifestError, match="has no metadata.name"):
        c.reload(
            split_objects(
                parse_documents("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "bad.yaml"), "bad.yaml"
            )
        )
    assert c.resource_version == before


def test_load_files_reads_every_file(tmp_path: Any) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n")
    b.write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n"
    )
    assert [obj["metadata"]["name"] for _, obj in load_files([str(a), str(b)])] == ["a", "b"]


# ---- patch formats -----------------------------------------------------------------------------------
def test_patch_formats() -> None:
    doc: dict[str, Any] = {
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "ports": [{"containerPort": 1}]},
                {"name": "b", "image": "y"},
            ]
        },
        "metadata": {"labels": {"k": "v"}},
    }
    merged = patch.merge(
        doc, {"metadata": {"labels": {"k": None, "n": "1"}}, "spec": {"containers": []}}
    )
    assert merged == {"spec": {"containers": []}, "metadata": {"labels": {"n": "1"}}}
    strategic = patch.strategic(
        doc,
        {
            "spec": {
                "containers": [
                    {"name": "b", "image": "z"},
                    {"name": "c"},
                    {"name": "a", "$patch": "delete"},
                ]
            }
        },
    )
    assert strategic["spec"]["containers"] == [{"name": "b", "image": "z"}, {"name": "c"}]
    ports = patch.strategic(
        doc, {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 2}]}]}}
    )
    assert ports["spec"]["containers"][0]["ports"] == [{"containerPort": 1}, {"containerPort": 2}]
    ops = [
        {"op": "add", "path": "/metadata/labels/x~1y", "value": "1"},
        {"op": "copy", "from": "/metadata/labels/k", "path": "/metadata/labels/c"},
        {"op": "move", "from": "/spec/containers/1", "path": "/spec/containers/0"},
        {"op": "remove", "path": "/spec/containers/1/ports"},
        {"op": "test", "path": "/spec/containers/0/name", "value": "b"},
    ]
    out = patch.json_patch(doc, ops)
    assert out["metadata"]["labels"] == {"k": "v", "x/y": "1", "c": "v"}
    assert out["spec"]["containers"] == [{"name": "b", "image": "y"}, {"name": "a", "image": "x"}]
    assert doc["spec"]["containers"][0]["ports"] == [{"containerPort": 1}]  # never in place
    for bad in (
        [{"op": "test", "path": "/metadata", "value": 1}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "jump", "path": "/"}],
        {"op": "add"},
        [{"op": "add", "path": "x", "value": 1}],
    ):
        with pytest.raises(PatchError):
            patch.json_patch(doc, bad)


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 70000)
    | st.sampled_from(
        [
            "",
            "v1",
            "apps/v1",
            "Pod",
            "Deployment",
            "web",
            "Running",
            "Pending",
            "http",
            "/spec",
            "add",
            "-",
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
                    "labels",
                    "spec",
                    "status",
                    "containers",
                    "ports",
                    "containerPort",
                    "selector",
                    "matchLabels",
                    "template",
                    "replicas",
                    "phase",
                    "op",
                    "path",
                    "value",
                    "$patch",
                    "generateName",
                    "namespace",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_JSONISH, which=st.integers(0, 6))
def test_any_write_gets_an_api_answer(body: Any, which: int) -> None:
    c = _cluster()
    api = Api(c, TOKEN)
    method, target, kind = [
        ("POST", PODS, "application/json"),
        ("POST", "/apis/apps/v1/namespaces/default/deployments", "application/json"),
        ("PATCH", f"{PODS}/db-0", patch.MERGE),
        ("PATCH", f"{PODS}/db-0/status", patch.STRATEGIC),
        ("PATCH", DEPLOY, patch.JSON_PATCH),
        ("PUT", f"{DEPLOY}/scale", "application/json"),
        ("PUT", f"{PODS}/db-0", "application/json"),
    ][which]
    reply = _call(api, method, target, body, kind)
    assert isinstance(reply, Response) and reply.status in (200, 201, 400, 404, 409, 415, 422), (
        reply
    )
    assert json.loads(reply.body)
    for plural in ("pods", "deployments", "replicasets"):
        json.dumps(c.list_objects(plural, None))  # whatever was stored can be served
