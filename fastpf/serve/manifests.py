"""Manifest text -> plain JSON-like objects, with bounded cost.

YAML aliases are allowed (hand-written manifests use `<<: *defaults`), but what they expand
to is counted before anything is built: a ~1 KB "billion laughs" document is refused after
a few thousand events instead of growing to gigabytes when it is serialised. Nesting depth,
file size and node count are capped too, timestamps stay strings (as kubectl's YAML-to-JSON
conversion keeps them), and every value must be JSON (no `!!binary`, sets or NaN), so a
stored object can always be served. The result shares nothing between aliased places.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from fastpf.errors import ManifestError

MAX_FILE_BYTES = 16 << 20  # one manifest file
MAX_BODY_NODES = 200_000  # one request body (POST/PUT/PATCH), after alias expansion
MAX_NODES = 500_000  # one file, after alias expansion
MAX_DEPTH = 64  # Kubernetes objects nest about 12 deep

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Loader(_Base):  # type: ignore[misc]
    """SafeLoader (libyaml when present) that leaves timestamps as strings."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def read_file(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None


def _where(mark: Any) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def check_expansion(text: str, source: str, max_nodes: int = MAX_NODES) -> None:
    """Walk the YAML events (no objects built) and refuse documents that nest deeper than
    MAX_DEPTH or whose aliases would expand to more than `max_nodes` nodes in all."""
    total = 0
    frames: list[list[Any]] = []  # [anchor, expanded node count] per open collection
    anchors: dict[str, int] = {}
    loader = _Loader(text)
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, yaml.DocumentStartEvent):
                anchors.clear()
                continue
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                frames.append([event.anchor, 1])
                if len(frames) > MAX_DEPTH:
                    raise ManifestError(
                        f"{source}: nested deeper than {MAX_DEPTH} levels{_where(event.start_mark)}"
                    )
                count = 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, size = frames.pop()
                if anchor is not None:
                    anchors[anchor] = size
                if frames:
                    frames[-1][1] += size
                continue  # already counted node by node
            elif isinstance(event, yaml.ScalarEvent):
                count = 1
                if event.anchor is not None:
                    anchors[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                count = anchors.get(event.anchor or "", 1)  # an unknown alias fails in the loader
            else:
                continue
            total += count
            if total > max_nodes:
                raise ManifestError(
                    f"{source}: more than {max_nodes} YAML nodes once aliases are expanded"
                    f"{_where(event.start_mark)}; refusing to expand it"
                )
            if frames and not isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                frames[-1][1] += count
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    return ManifestError(f"{source}: invalid YAML{_where(mark)}: {problem}")


def plain(value: Any, where: str, depth: int = 0) -> Any:
    """A JSON-only copy of `value` (aliased parts become independent copies)."""
    if depth > MAX_DEPTH:
        raise ManifestError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ManifestError(f"{where}: mapping key {key!r} is not a string (quote it)")
            out[key] = plain(item, where, depth + 1)
        return out
    if isinstance(value, list):
        return [plain(item, where, depth + 1) for item in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"{where}: {value!r} is not a JSON number")
        return value
    raise ManifestError(f"{where}: a {type(value).__name__} value cannot be served as JSON")


def parse_documents(text: str, source: str, max_nodes: int = MAX_NODES) -> list[Any]:
    """Every YAML document of `text` as plain data (empty documents are None)."""
    check_expansion(text, source, max_nodes)
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:  # pragma: no cover - check_expansion bounds the depth first
        raise ManifestError(f"{source}: nested too deeply") from None
    return [plain(doc, f"{source}: document {i}") for i, doc in enumerate(documents, 1)]


def split_objects(documents: list[Any], source: str) -> list[tuple[str, Any]]:
    """(where, object) for every object of the documents; `kind: List` is flattened."""
    objects: list[tuple[str, Any]] = []
    for index, doc in enumerate(documents, 1):
        if doc is None:
            continue
        where = f"{source}: document {index}"
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            if not isinstance(items, list):
                raise ManifestError(f"{where}: kind List needs an 'items' list")
            if not isinstance(doc.get("apiVersion"), str) or not doc["apiVersion"]:
                raise ManifestError(f"{where}: List has no apiVersion")
            objects.extend((f"{where} items[{i}]", item) for i, item in enumerate(items))
        else:
            objects.append((where, doc))
    if not objects:
        raise ManifestError(f"{source}: no objects in the manifest (it is empty)")
    return objects


def load_file(path: Path) -> list[tuple[str, Any]]:
    """Read, parse and split one manifest file (blocking; run it off the event loop)."""
    source = str(path)
    return split_objects(parse_documents(read_file(path), source), source)


def load_files(paths: list[str]) -> list[tuple[str, Any]]:
    objects: list[tuple[str, Any]] = []
    for path in paths:
        objects.extend(load_file(Path(path)))
    return objects


def decode_body(body: bytes, content_type: str | None) -> Any:
    """A request body (JSON, or YAML when the content type says so) as plain data.
    Raises ManifestError with a message for a 400 reply."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if "protobuf" in kind:
        raise ManifestError("protobuf bodies are not supported; send JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("the body is not UTF-8") from None
    if kind.endswith("yaml"):
        documents = [d for d in parse_documents(text, "body", MAX_BODY_NODES) if d is not None]
        if len(documents) != 1:
            raise ManifestError(f"body: expected one YAML document, got {len(documents)}")
        return documents[0]
    try:
        value = json.loads(text)
    except RecursionError:
        raise ManifestError("body: JSON nested too deeply") from None
    except ValueError as exc:
        raise ManifestError(f"body: invalid JSON: {exc}") from None
    return plain(value, "body")
