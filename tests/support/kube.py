"""FakeKube: the one in-memory paved.kube.port.KubePort of the unit tests and benchmarks.

It behaves as the API server does where Paved's code can tell (tests/support/kube_contract.py
holds it to that, and the same contract runs against the real API server in
tests/integration/test_kube_port_contract.py):

- every write that changes an object gives it a new resourceVersion (one counter for all
  objects); a write that changes nothing does not; `generation` counts changes outside
  metadata and status of the kinds that have one (workloads, custom resources);
- server-side apply keeps field ownership per field manager, down to map entries (labels,
  annotations, spec fields), conditions by type and ownerReferences by uid: a manager's
  apply replaces what it applied before, fields it stops applying go unless another
  manager holds them, and it takes over (force) fields others hold; an apply carrying a
  resourceVersion is a precondition (409 Conflict);
- create of a taken name, a stale guarded merge patch: 409; a missing object: 404; all as
  paved.kube.client.ApiError, the real adapter's type;
- label selectors (`a=b`, `a!=b`, `a`, `!a`, comma-joined), metadata-only lists;
- a Secret's write-only stringData is stored as base64 data.

For tests: `calls` logs every port call (`count(...)` filters it), `events` every Event,
`put` seeds an object as another client would, `obj` reads one, `fail` makes a verb fail,
`before` lands another client's write just before a call (races), `react` plays a controller
(e.g. a Deployment becoming ready once written).
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from paved.kube import apply as kube_apply
from paved.kube.client import ApiError
from paved.providers.base import Owner

Json = dict[str, Any]
Path = tuple[str, ...]

CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterSecretStore",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Composition", "IntentPolicy", "PersistentVolume",
})
# Core kinds without metadata.generation (the API server sets it on workloads and custom resources).
WITHOUT_GENERATION = frozenset({"Secret", "ConfigMap", "ServiceAccount", "Service", "Namespace", "Event", "Endpoints"})
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                   "deletionTimestamp")
# List-maps merged by key, as their OpenAPI schema declares: (path of the list, key field).
LIST_MAPS = {("status", "conditions"): "type", ("metadata", "ownerReferences"): "uid"}
WRITE_VERBS = frozenset({"apply", "apply_fields", "create", "merge_patch", "patch", "delete"})
UPDATE_MANAGER = "before-first-apply"  # who holds fields written by create/patch/put (not an apply)


class Call(NamedTuple):
    verb: str  # get, list, apply, apply_fields, create, merge_patch, patch, delete, event
    kind: str
    namespace: str
    name: str
    field_manager: str | None = None
    subresource: str | None = None


def _key(kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
    return (kind, "" if kind in CLUSTER_SCOPED else (namespace or ""), name)


class FakeKube:
    """paved.kube.port.KubePort in memory (see the module docstring). Thread-safe."""

    def __init__(self, objects: tuple[Mapping[str, Any], ...] | list[Mapping[str, Any]] = ()) -> None:
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str], Json] = {}
        self._owners: dict[tuple[str, str, str], dict[str, set[Path]]] = {}
        self._version = 0
        self._failures: dict[tuple[str, str], ApiError] = {}
        self._controllers: dict[str, Callable[[Json], None]] = {}
        self._before: dict[tuple[str, str], Callable[[], None]] = {}
        self.calls: list[Call] = []
        self.events: list[tuple[str, str, str, str]] = []  # (owner name, reason, message, type)
        for body in objects:
            self.put(body)

    # --- for tests ----------------------------------------------------------------------

    def put(self, body: Mapping[str, Any]) -> Json:
        """Create or replace an object as another client would (not logged in `calls`)."""
        with self._lock:
            metadata = body.get("metadata") or {}
            key = _key(str(body.get("kind")), str(metadata.get("name")), metadata.get("namespace"))
            live = self._objects.get(key)
            stored = copy.deepcopy(dict(kube_apply.as_stored(body)))
            stored.setdefault("metadata", {})
            if key[1]:
                stored["metadata"]["namespace"] = key[1]
            if live is not None:
                for field in ("uid", "creationTimestamp", "generation"):
                    if field in live["metadata"]:
                        stored["metadata"].setdefault(field, live["metadata"][field])
            self._owners.pop(key, None)
            self._claim(key, UPDATE_MANAGER, _leaves(_declared(stored)))
            return self._store(key, stored, live)

    def obj(self, kind: str, name: str, namespace: str | None = None) -> Json | None:
        """The stored object (a copy), None when absent; not logged."""
        with self._lock:
            return copy.deepcopy(self._objects.get(_key(kind, name, namespace)))

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[Json]:
        """Stored objects (copies) of `kind` in `namespace` (None: any), by namespace and name."""
        with self._lock:
            return [copy.deepcopy(body) for key, body in sorted(self._objects.items())
                    if (kind is None or key[0] == kind) and (namespace is None or key[1] == namespace)]

    def count(self, verb: str | None = None, kind: str | None = None, namespace: str | None = None,
              name: str | None = None, subresource: str | None = "*") -> int:
        """How many logged calls match (None: any; subresource "*": any)."""
        with self._lock:
            return sum(1 for call in self.calls
                       if (verb is None or call.verb == verb) and (kind is None or call.kind == kind)
                       and (namespace is None or call.namespace == namespace) and (name is None or call.name == name)
                       and (subresource == "*" or call.subresource == subresource))

    def writes(self, kind: str | None = None, namespace: str | None = None) -> list[Call]:
        """The logged calls that write (every verb but get, list and event)."""
        with self._lock:
            return [call for call in self.calls if call.verb in WRITE_VERBS and (kind is None or call.kind == kind)
                    and (namespace is None or call.namespace == namespace)]

    def fail(self, verbs: str, kind: str, error: ApiError | None) -> None:
        """Make the space-separated `verbs` on `kind` raise `error` until called with None."""
        with self._lock:
            for verb in verbs.split():
                if error is None:
                    self._failures.pop((verb, kind), None)
                else:
                    self._failures[(verb, kind)] = error

    def before(self, verb: str, kind: str, action: Callable[[], None] | None) -> None:
        """Run `action` at the start of every `verb` call on `kind` (another client's write
        landing between a read and a write: a race); None removes it."""
        with self._lock:
            if action is None:
                self._before.pop((verb, kind), None)
            else:
                self._before[(verb, kind)] = action

    def react(self, kind: str, controller: Callable[[Json], None]) -> None:
        """After every write of a `kind` object, `controller` may change the stored object in
        place (as a controller would, with a write of its own: a new resourceVersion)."""
        self._controllers[kind] = controller

    # --- KubePort -----------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            cached: bool = False) -> Json | None:
        with self._lock:
            self._enter("get", kind, namespace, name)
            return copy.deepcopy(self._objects.get(_key(kind, name, namespace)))

    def list(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "", *,
             metadata_only: bool = False) -> list[Json]:
        matches = _selector(selector)
        with self._lock:
            self._enter("list", kind, namespace, "")
            found = []
            for key, body in sorted(self._objects.items()):
                if key[0] != kind or (namespace and key[1] != namespace):
                    continue
                if not matches((body.get("metadata") or {}).get("labels") or {}):
                    continue
                item = copy.deepcopy(body)
                if metadata_only:
                    item = {"apiVersion": item.get("apiVersion", api_version), "kind": kind, "metadata": item["metadata"]}
                found.append(item)
            return found

    def apply(self, body: Mapping[str, Any], owner: Owner, *, field_manager: str = kube_apply.FIELD_MANAGER,
              allow_unowned: bool = False) -> Json:
        decorated = kube_apply.decorate(body, owner, namespaced=body.get("kind") not in CLUSTER_SCOPED,
                                        allow_unowned=allow_unowned)
        for field in SERVER_METADATA:
            decorated["metadata"].pop(field, None)
        decorated.pop("status", None)
        with self._lock:
            self._enter("apply", decorated.get("kind", ""), decorated["metadata"].get("namespace"),
                        decorated["metadata"]["name"], field_manager)
            return self._server_side_apply(decorated, field_manager, None)

    def apply_fields(self, body: Mapping[str, Any], *, field_manager: str, subresource: str | None = None) -> Json:
        metadata = body.get("metadata") or {}
        with self._lock:
            self._enter("apply_fields", str(body.get("kind")), metadata.get("namespace"), metadata.get("name", ""),
                        field_manager, subresource)
            return self._server_side_apply(body, field_manager, subresource)

    def create(self, body: Mapping[str, Any], owner: Owner | None = None) -> Json:
        if owner is not None:
            body = kube_apply.decorate(body, owner, namespaced=body.get("kind") not in CLUSTER_SCOPED)
        metadata = body.get("metadata") or {}
        key = _key(str(body.get("kind")), str(metadata.get("name")), metadata.get("namespace"))
        with self._lock:
            self._enter("create", key[0], key[1], key[2])
            if key in self._objects:
                raise self._error(409, "AlreadyExists", "POST", key)
            stored = copy.deepcopy(dict(kube_apply.as_stored(body)))
            for field in SERVER_METADATA:
                stored["metadata"].pop(field, None)
            stored.pop("status", None)
            self._claim(key, UPDATE_MANAGER, _leaves(_declared(stored)))
            return self._store(key, stored, None)

    def merge_patch(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
        metadata = live["metadata"]
        key = _key(str(live.get("kind")), metadata["name"], metadata.get("namespace"))
        with self._lock:
            self._enter("merge_patch", key[0], key[1], key[2])
            current = self._objects.get(key)
            if current is None:
                raise self._error(404, "NotFound", "PATCH", key)
            if current["metadata"].get("resourceVersion") != metadata.get("resourceVersion"):
                raise self._error(409, "Conflict", "PATCH", key)
            return self._merge(key, current, patch)

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]) -> Json:
        key = _key(kind, name, namespace)
        with self._lock:
            self._enter("patch", kind, namespace, name)
            current = self._objects.get(key)
            if current is None:
                raise self._error(404, "NotFound", "PATCH", key)
            return self._merge(key, current, patch)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               uid: str | None = None) -> bool:
        key = _key(kind, name, namespace)
        with self._lock:
            self._enter("delete", kind, namespace, name)
            current = self._objects.get(key)
            if current is None or (uid and current["metadata"].get("uid") != uid):
                return False
            del self._objects[key]
            self._owners.pop(key, None)
            return True

    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        with self._lock:
            self.calls.append(Call("event", owner.kind, owner.namespace or "", owner.name))
            self.events.append((owner.name, reason, message, type))

    def namespaced(self, api_version: str, kind: str) -> bool:
        return kind not in CLUSTER_SCOPED

    # --- the API server's part ----------------------------------------------------------

    def _enter(self, verb: str, kind: str, namespace: str | None, name: str, field_manager: str | None = None,
               subresource: str | None = None) -> None:
        self.calls.append(Call(verb, kind, "" if kind in CLUSTER_SCOPED else (namespace or ""), name, field_manager,
                               subresource))
        action = self._before.get((verb, kind))
        if action is not None:
            action()
        failure = self._failures.get((verb, kind))
        if failure is not None:
            raise failure

    @staticmethod
    def _error(status: int, reason: str, method: str, key: tuple[str, str, str]) -> ApiError:
        kind, namespace, name = key
        path = f"/{kind.lower()}s/{name}" if not namespace else f"/namespaces/{namespace}/{kind.lower()}s/{name}"
        messages = {404: f'{kind.lower()}s "{name}" not found', 409: f'{kind.lower()}s "{name}": {reason}'}
        return ApiError(status, reason, messages.get(status, reason), method=method, path=path, names=(name,))

    def _server_side_apply(self, body: Mapping[str, Any], manager: str, subresource: str | None) -> Json:
        metadata = body.get("metadata") or {}
        key = _key(str(body.get("kind")), str(metadata.get("name")), metadata.get("namespace"))
        live = self._objects.get(key)
        wanted = metadata.get("resourceVersion")
        if wanted and (live is None or live["metadata"].get("resourceVersion") != wanted):
            raise self._error(409, "Conflict", "PATCH", key)
        if subresource == "status":
            if live is None:
                raise self._error(404, "NotFound", "PATCH", key)
            declared = {"status": body.get("status") or {}}
        else:
            declared = _declared({k: v for k, v in kube_apply.as_stored(body).items() if k != "status"})
        space = f"{manager}/{subresource or ''}"
        result = copy.deepcopy(live) if live is not None else {
            "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {"name": key[2], **({"namespace": key[1]} if key[1] else {})}}
        paths = dict(_leaves(declared))
        for path in self._owners.get(key, {}).get(space, set()) - set(paths):
            if not any(path in held for other, held in self._owners.get(key, {}).items() if other != space):
                _remove(result, path)
        for path, value in paths.items():
            _set(result, path, value)
        self._claim(key, space, paths)
        return self._store(key, result, live)

    def _merge(self, key: tuple[str, str, str], current: Json, patch: Mapping[str, Any]) -> Json:
        patch = copy.deepcopy(dict(patch))
        (patch.get("metadata") or {}).pop("resourceVersion", None)
        result = _merge_patch(copy.deepcopy(current), patch)
        self._claim(key, UPDATE_MANAGER, {path: None for path, value in _leaves(patch).items() if value is not None})
        return self._store(key, result, current)

    def _claim(self, key: tuple[str, str, str], manager: str, paths: Mapping[Path, Any]) -> None:
        owners = self._owners.setdefault(key, {})
        for other, held in owners.items():
            if other != manager:
                held.difference_update(paths)
        owners[manager] = set(paths) if manager != UPDATE_MANAGER else owners.get(manager, set()) | set(paths)

    def _store(self, key: tuple[str, str, str], result: Json, live: Json | None) -> Json:
        if live is not None and _content(result) == _content(live):
            return copy.deepcopy(live)  # nothing changed: no write, no new resourceVersion
        self._stamp(key, result, live)
        self._objects[key] = result
        controller = self._controllers.get(key[0])
        if controller is not None:
            before = copy.deepcopy(result)
            controller(result)
            if _content(result) != _content(before):
                self._stamp(key, result, before)
        return copy.deepcopy(result)

    def _stamp(self, key: tuple[str, str, str], result: Json, live: Json | None) -> None:
        self._version += 1
        metadata = result.setdefault("metadata", {})
        metadata["resourceVersion"] = str(self._version)
        if live is None:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        if key[0] not in WITHOUT_GENERATION:
            previous = int((live or {}).get("metadata", {}).get("generation") or 0)
            changed = live is None or _spec(result) != _spec(live)
            metadata["generation"] = previous + 1 if changed else max(previous, 1)


# --- pure helpers ---------------------------------------------------------------------


def _content(body: Mapping[str, Any]) -> Any:
    return {k: v for k, v in body.items() if k != "metadata"}, {
        k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_METADATA}


def _spec(body: Mapping[str, Any]) -> Any:
    return {k: v for k, v in body.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _declared(body: Mapping[str, Any]) -> Json:
    """The fields of `body` a manager holds: everything but identity and server metadata."""
    metadata = {k: v for k, v in (body.get("metadata") or {}).items()
                if k not in SERVER_METADATA and k not in ("name", "namespace")}
    return {**{k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")},
            **({"metadata": metadata} if metadata else {})}


def _leaves(body: Mapping[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Leaf field paths of `body` and their values: maps are followed (an empty map is a
    leaf), list-maps by their key, any other list is one field."""
    found: dict[Path, Any] = {}
    for name, value in body.items():
        path = (*prefix, str(name))
        if isinstance(value, Mapping) and value:
            found.update(_leaves(value, path))
        elif path in LIST_MAPS and isinstance(value, list):
            for item in value:
                found[(*path, str(item.get(LIST_MAPS[path])))] = item
        else:
            found[path] = value
    return found


def _set(body: Json, path: Path, value: Any) -> None:
    if path[:-1] in LIST_MAPS:
        field = LIST_MAPS[path[:-1]]
        items = _parent(body, path[:-1]).setdefault(path[-2], [])
        for index, item in enumerate(items):
            if str(item.get(field)) == path[-1]:
                items[index] = copy.deepcopy(value)
                return
        items.append(copy.deepcopy(value))
        return
    holder = _parent(body, path)
    if value == {} and isinstance(holder.get(path[-1]), dict):
        return  # an empty map declares the map, not its entries (others' entries stay)
    holder[path[-1]] = copy.deepcopy(value)


def _remove(body: Json, path: Path) -> None:
    if path[:-1] in LIST_MAPS:
        holder = _parent(body, path[:-1])
        field = LIST_MAPS[path[:-1]]
        holder[path[-2]] = [item for item in holder.get(path[-2]) or [] if str(item.get(field)) != path[-1]]
        return
    trail = list(_walk(body, path[:-1]))
    if len(trail) < len(path) - 1:
        return
    holder = trail[-1] if trail else body
    if isinstance(holder.get(path[-1]), dict) and holder[path[-1]]:
        return  # the map was declared empty: the entries are others'
    holder.pop(path[-1], None)
    for depth in range(len(trail) - 1, -1, -1):  # drop maps left empty
        holder = trail[depth - 1] if depth else body
        if trail[depth] == {}:
            holder.pop(path[depth], None)


def _walk(body: Json, path: Path) -> Iterator[Json]:
    current = body
    for name in path:
        current = current.get(name)
        if not isinstance(current, dict):
            return
        yield current


def _parent(body: Json, path: Path) -> Json:
    current = body
    for name in path[:-1]:
        if not isinstance(current.get(name), dict):
            current[name] = {}
        current = current[name]
    return current


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge_patch(result.get(name), value)
    return result


def _selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A label selector's equality and existence requirements as a predicate."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            name, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, n=name, v=value: labels.get(n) != v)
        elif "=" in term:
            name, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, n=name, v=value: labels.get(n) == v)
        elif term.startswith("!"):
            tests.append(lambda labels, n=term[1:].strip(): n not in labels)
        elif " " in term or "(" in term:
            raise ValueError(f"FakeKube does not parse set-based selector {term!r}")
        else:
            tests.append(lambda labels, n=term: n in labels)
    return lambda labels: all(test(labels) for test in tests)
