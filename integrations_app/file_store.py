"""Local mode: the seed's files as a store — integrations/<name>.json and config.json `routes`.

Writes are atomic (temp file + rename) and serialised across processes by a file lock; every
write re-reads the files under that lock and changes only the entry it is about, so another
writer's change, a hand edit, unknown keys of config.json (`mcpServers`, …) and even malformed
entries survive. A malformed file or entry is reported by name and reason; the rest still load.
"""

import json
import logging
import os
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from backflow.errors import InvalidInput, NotFound
from integrations_app.documents import clean_integration, clean_route
from integrations_app.stores import IntegrationStore, duplicate_route

logger = logging.getLogger("backflow.local")
ROUTE_ID_NAMESPACE = uuid.UUID("6f0e9a52-3c1d-4d0e-9a7e-6a1f1c5e2b10")


@dataclass
class Snapshot:
    integrations: dict = field(default_factory=dict)  # name -> document
    routes: list = field(default_factory=list)  # documents, with ids
    problems: list = field(default_factory=list)  # {"file", "error"}
    stamp: tuple = ()


def write_json_atomic(path: Path, data):
    """Write JSON to `path` so that readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def route_key(doc):
    # Raw entries of config.json may be malformed (e.g. "method": 7); they must not break writes.
    method = doc.get("method")
    return (method.lower() if isinstance(method, str) else method, doc.get("path"))


def stable_route_id(doc):
    """Hand-written routes may have no id; derive one that stays the same across loads."""
    method, path = route_key(doc)
    return str(uuid.uuid5(ROUTE_ID_NAMESPACE, f"{method} {path}"))


class FileStore(IntegrationStore):
    allow_env = True

    def __init__(self, *, integrations_path, config_path, auto_reload=False):
        self.integrations_path = Path(integrations_path)
        self.config_path = Path(config_path)
        self.auto_reload = auto_reload
        self._lock = FileLock(str(self.config_path) + ".lock", thread_local=False)
        self._depth = 0
        self._mutex = threading.RLock()
        self._snapshot = None

    # -- reading ---------------------------------------------------------------------------

    def _stamp(self):
        entries = []
        if self.integrations_path.is_dir():
            for entry in os.scandir(self.integrations_path):
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    stat = entry.stat()
                    entries.append((entry.name, stat.st_mtime_ns, stat.st_size))
        try:
            stat = self.config_path.stat()
            entries.append(("config.json", stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            pass
        return tuple(sorted(entries))

    def read_config(self):
        """config.json as a dict ({} when absent); ValueError naming the problem when unreadable."""
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            config = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_path}: expected a JSON object.")
        if not isinstance(config.get("routes", []), list):
            raise ValueError(f"{self.config_path}: `routes` must be a list.")
        return config

    def _load(self):
        snap = Snapshot(stamp=self._stamp())
        for name, _, _ in snap.stamp:
            if name == "config.json":
                continue
            path = self.integrations_path / name
            try:
                doc = clean_integration(json.loads(path.read_text(encoding="utf-8")), allow_env=True)
                if f"{doc['name']}.json" != name:
                    raise ValueError(f"its name {doc['name']!r} does not match the file name; rename one of them.")
                snap.integrations[doc["name"]] = doc
            except (OSError, ValueError, InvalidInput) as exc:
                snap.problems.append({"file": str(path), "error": str(exc)})
        try:
            raw_routes = self.read_config().get("routes", [])
        except ValueError as exc:
            snap.problems.append({"file": str(self.config_path), "error": str(exc)})
            raw_routes = []
        for index, raw in enumerate(raw_routes):
            try:
                doc = clean_route(raw, find_integration=snap.integrations.get, allow_env=True)
            except InvalidInput as exc:
                snap.problems.append({"file": f"{self.config_path} routes[{index}]", "error": str(exc)})
                continue
            doc["id"] = raw.get("id") or stable_route_id(doc)
            snap.routes.append(doc)
        for problem in snap.problems:
            logger.warning("Skipped %s: %s", problem["file"], problem["error"])
        return snap

    def snapshot(self):
        """The loaded files: re-read at the start of each write (under the lock), after each
        write, and on any change when autoReload is on; otherwise served from memory."""
        with self._mutex:
            if self._snapshot is None or (self.auto_reload and not self._depth and self._stamp() != self._snapshot.stamp):
                self._snapshot = self._load()
            return self._snapshot

    @property
    def problems(self):
        return list(self.snapshot().problems)

    def list_integrations(self):
        return [self.snapshot().integrations[name] for name in sorted(self.snapshot().integrations)]

    def get_integration(self, name):
        return self.snapshot().integrations.get(name)

    def list_routes(self):
        routes = self.snapshot().routes
        if self._depth:
            # A write that checks which routes use an integration must not trust an unreadable config.json.
            self._raw_routes()
        return sorted(routes, key=lambda r: (r["path"], r["method"]))

    def get_route(self, *, route_id=None, path=None, method=None):
        for route in self.snapshot().routes:
            if (route["id"] == route_id) if route_id else (route["path"], route["method"]) == (path, method):
                return route
        return None

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self):
        with self._mutex, self._lock:
            if not self._depth:
                self._snapshot = None  # another process may have written since we last read
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    def _integration_file(self, name):
        return self.integrations_path / f"{name}.json"

    def save_integration(self, doc, *, create):
        with self.transaction():
            write_json_atomic(self._integration_file(doc["name"]), doc)
            self._snapshot = None
        return doc

    def delete_integration(self, name):
        with self.transaction():
            self._integration_file(name).unlink(missing_ok=True)
            self._snapshot = None

    def _raw_routes(self):
        try:
            config = self.read_config()
        except ValueError as exc:
            raise InvalidInput.single("config.json", f"{exc} Fix the file by hand first.") from exc
        return config, config.setdefault("routes", [])

    def _raw_index(self, raw_routes, route_id):
        for index, raw in enumerate(raw_routes):
            if isinstance(raw, dict) and (raw.get("id") or stable_route_id(raw)) == route_id:
                return index
        raise NotFound(f"No route with id {route_id} in {self.config_path}.")

    def save_route(self, doc, *, route_id=None):
        with self.transaction():
            config, raw_routes = self._raw_routes()
            doc = {"id": route_id or str(uuid.uuid4()), **{k: v for k, v in doc.items() if k != "id"}}
            for raw in raw_routes:
                if isinstance(raw, dict) and route_key(raw) == route_key(doc) and (raw.get("id") or stable_route_id(raw)) != doc["id"]:
                    raise duplicate_route(doc["method"], doc["path"])
            if route_id is None:
                raw_routes.append(doc)
            else:
                raw_routes[self._raw_index(raw_routes, route_id)] = doc
            write_json_atomic(self.config_path, config)
            self._snapshot = None
        return doc

    def delete_route(self, route_id):
        with self.transaction():
            config, raw_routes = self._raw_routes()
            del raw_routes[self._raw_index(raw_routes, route_id)]
            write_json_atomic(self.config_path, config)
            self._snapshot = None

    def update_config(self, key, value):
        """Set one top-level key of config.json (e.g. mcpServers), keeping everything else."""
        with self.transaction():
            config, _ = self._raw_routes()
            config[key] = value
            write_json_atomic(self.config_path, config)
            self._snapshot = None

    def record(self, action, object_type, object_id, summary):
        logger.info("%s %s %s", action, object_id, json.dumps(summary))

