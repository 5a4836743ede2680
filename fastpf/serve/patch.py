"""The three PATCH formats kubectl sends, applied to plain JSON data (never in place).

- `application/merge-patch+json` (RFC 7386): maps merge, `null` deletes, lists are replaced.
- `application/strategic-merge-patch+json` (kubectl patch's default): like a merge patch, but
  lists of objects that Kubernetes merges by a key (containers by name, container ports by
  containerPort, conditions by type, ...) are merged item by item; `$patch: delete` removes an
  item and `$patch: replace` replaces the whole map. Enough for the objects served here.
- `application/json-patch+json` (RFC 6902): add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy
from typing import Any

from fastpf.errors import PatchError

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Field name -> the key its list items are merged by (Kubernetes' patchMergeKey tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
}
_PORTS_KEYS = ("containerPort", "port")  # container ports / service ports


def apply(kind: str, target: Any, patch: Any) -> Any:
    """`target` with `patch` applied; `kind` is the request's Content-Type (parameters ignored)."""
    kind = kind.split(";")[0].strip().lower()
    if kind == MERGE:
        return merge(target, patch)
    if kind == STRATEGIC:
        return strategic(target, patch)
    if kind == JSON_PATCH:
        return json_patch(target, patch)
    raise PatchError(
        f"unsupported patch type {kind or '(none)'!r}: use {MERGE}, {STRATEGIC} or {JSON_PATCH}"
    )


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def strategic(target: Any, patch: Any, field: str = "") -> Any:
    if isinstance(patch, list):
        return _strategic_list(target, patch, field)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic(out.get(key), value, key)
    return out


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        for key in _PORTS_KEYS:
            if all(isinstance(i, dict) and key in i for i in items):
                return key
        return None
    return _MERGE_KEYS.get(field)


def _strategic_list(target: Any, patch: list[Any], field: str) -> list[Any]:
    key = _merge_key(field, patch)
    if key is None or not isinstance(target, list) or not all(isinstance(i, dict) for i in target):
        return [
            copy.deepcopy(i)
            for i in patch
            if not (isinstance(i, dict) and i.get("$patch") == "delete")
        ]
    out = [copy.deepcopy(i) for i in target]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"strategic merge patch: every item of {field} needs {key!r}")
        index = next((n for n, cur in enumerate(out) if cur.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append({k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("$")})
        else:
            out[index] = strategic(out[index], item, field)
    return out


# ---- RFC 6902 -------------------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"json patch: bad path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        node = _child(node, part, path)
    return node, parts[-1]


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise PatchError(f"json patch: path {path!r} does not exist")


def _get(doc: Any, path: str) -> Any:
    node = doc
    for part in _pointer(path):
        node = _child(node, part, path)
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise PatchError(f"json patch: bad list index in {path!r}")
        parent.insert(index, copy.deepcopy(value))
    else:
        raise PatchError(f"json patch: path {path!r} does not exist")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("json patch: cannot remove the whole object")
    parent, last = _parent(doc, parts, path)
    value = _child(parent, last, path)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return doc, value


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json patch: expected a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise PatchError("json patch: every operation needs an 'op'")
        name, path, source = op["op"], op.get("path"), op.get("from")
        if not isinstance(path, str) or (name in ("move", "copy") and not isinstance(source, str)):
            raise PatchError(
                f"json patch: {name} needs a string 'path'"
                + (" and 'from'" if name in ("move", "copy") else "")
            )
        if name in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"json patch: {name} needs a 'value'")
        if name == "add":
            doc = _add(doc, path, op["value"])
        elif name == "remove":
            doc, _ = _remove(doc, path)
        elif name == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, op["value"])
        elif name in ("move", "copy"):
            value = copy.deepcopy(_get(doc, str(source)))
            if name == "move":
                doc, _ = _remove(doc, str(source))
            doc = _add(doc, path, value)
        elif name == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"json patch: test failed at {path!r}")
        else:
            raise PatchError(f"json patch: unknown op {name!r}")
    return doc
