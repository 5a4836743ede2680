"""Label and field selectors in the string syntax kubectl sends (`labelSelector=app=x,tier in (a,b)`).

kubectl turns a controller's `matchLabels`/`matchExpressions` into this syntax itself
(`metav1.LabelSelectorAsSelector`), so the server only ever parses strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fastpf.errors import SelectorError

Matcher = Callable[[Mapping[str, str]], bool]

# A label key: optional DNS prefix + "/" + name. Values: empty or a 63-char name.
_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_CMP_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `( ... )`."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str | None) -> Matcher:
    """Compile a label selector string; empty matches everything."""
    if not text or not text.strip():
        return lambda labels: True
    requirements: list[Matcher] = []
    for raw in _split_top_level(text):
        if not raw.strip():
            raise SelectorError(
                f"unable to parse requirement: found '', expected: identifier in {text!r}"
            )
        requirements.append(_parse_requirement(raw))
    return lambda labels: all(req(labels) for req in requirements)


def _parse_requirement(raw: str) -> Matcher:
    m = _SET_RE.match(raw)
    if m:
        key, op, body = m.group(1), m.group(2), m.group(3)
        values = {v.strip() for v in body.split(",") if v.strip()}
        for v in values:
            if not _VALUE_RE.match(v):
                raise SelectorError(f"invalid label value: {v!r}")
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: labels.get(key) not in values
    m = _CMP_RE.match(raw)
    if m:
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError:
            raise SelectorError(
                f"for 'Gt', 'Lt' operators, the value must be an integer: {value!r}"
            ) from None
        greater = op == ">"

        def compare(labels: Mapping[str, str]) -> bool:
            number = _int_or_none(labels.get(key))
            if number is None:
                return False
            return number > bound if greater else number < bound

        return compare
    m = _EXISTS_RE.match(raw)
    if m:
        negate, key = m.group(1) == "!", m.group(2)
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {raw.strip()!r}")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# Field selectors: the few fields the API server supports for pods and most objects.
_FIELD_GETTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: o.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda o: o.get("metadata", {}).get("namespace", ""),
    "status.phase": lambda o: o.get("status", {}).get("phase", ""),
    "spec.nodeName": lambda o: o.get("spec", {}).get("nodeName", ""),
    "spec.restartPolicy": lambda o: o.get("spec", {}).get("restartPolicy", ""),
    "status.podIP": lambda o: o.get("status", {}).get("podIP", ""),
}


def parse_field_selector(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """Compile a field selector (`metadata.name=x,status.phase!=Failed`)."""
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for raw in text.split(","):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", raw)
        if not m:
            raise SelectorError(
                f"invalid selector: {raw.strip()!r}; can't understand {raw.strip()!r}"
            )
        field, op, value = m.group(1), m.group(2), m.group(3)
        getter = _FIELD_GETTERS.get(field)
        if getter is None:
            raise SelectorError(f"field label not supported: {field}")
        checks.append(_field_check(getter, value, op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def match_labels_selector(selector: Mapping[str, Any]) -> str:
    """A LabelSelector object (matchLabels + matchExpressions) as the selector string kubectl
    would send; used to validate manifests and to fill `status.selector`."""
    parts: list[str] = []
    labels = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not isinstance(labels, Mapping):
        raise SelectorError("matchLabels must be a mapping")
    if not isinstance(exprs, list) or not all(isinstance(e, Mapping) for e in exprs):
        raise SelectorError("matchExpressions must be a list of mappings")
    for key, value in sorted(labels.items(), key=lambda kv: str(kv[0])):
        parts.append(f"{key}={value}")
    for expr in exprs:
        key = expr.get("key")
        op = expr.get("operator")
        values = expr.get("values") or []
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError("matchExpressions values must be a list of strings")
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(f"{key}")
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
    return ",".join(parts)


def _field_check(
    getter: Callable[[dict[str, Any]], str], value: str, negate: bool
) -> Callable[[dict[str, Any]], bool]:
    def check(obj: dict[str, Any]) -> bool:
        return (getter(obj) == value) != negate

    return check
