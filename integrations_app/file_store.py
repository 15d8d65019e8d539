"""Local mode: the seed's files as a store — integrations/<name>.json and config.json `routes`.

Writes are atomic (temp file + rename) and serialised across processes by a file lock; every
write re-reads the files under that lock and changes only the entry it is about, so another
writer's change, a hand edit, unknown keys of config.json (`mcpServers`, …) and even malformed
entries survive. A malformed file or entry is reported by name and reason; the rest still load.

Only regular files of at most BACKFLOW_LOCAL_FILE_MAX_BYTES are read (`read_local_file`): a FIFO
named `integrations/a.json` would wait for a writer forever, and a link to /dev/zero would never
end; they are reported like malformed files, before anything is read from them.
"""

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
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


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def local_file_limit():
    return settings.BACKFLOW_LOCAL_FILE_MAX_BYTES


def _not_regular(mode):
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return ValueError(f"it is {kind}, not a regular file; local mode reads only regular JSON files (a link to one is fine).")


def _too_large(size, limit):
    return ValueError(f"it holds {size} bytes, more than the {limit} a local-mode file may hold (BACKFLOW_LOCAL_FILE_MAX_BYTES).")


def read_local_file(path):
    """The UTF-8 text of `path` when it is a regular file (or a link to one) of at most
    BACKFLOW_LOCAL_FILE_MAX_BYTES; FileNotFoundError when it does not exist; ValueError saying what
    is wrong otherwise. Never blocks: what the name leads to is judged before opening, and what was
    opened (without waiting, so a FIFO swapped in meanwhile cannot hold it) is judged again."""
    limit = local_file_limit()
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(mode)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"it cannot be opened ({exc.strerror}).") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(info.st_mode)
        if info.st_size > limit:
            raise _too_large(info.st_size, limit)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise _too_large(size, limit)
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc


def encode_json(data):
    """How local-mode files are written: 2-space indent, non-ASCII kept, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: Path, data):
    """Write JSON to `path` so that readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(encode_json(data))
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


def lock_path(config_path):
    """Where writers of one project meet: outside the project's folder (a `config.json.lock` beside
    the files was committed by mistake), one per config file, the same for every process of this user."""
    folder = Path(tempfile.gettempdir()) / f"backflow-locks-{os.getuid()}"  # per user: another's is not writable
    folder.mkdir(mode=0o700, exist_ok=True)
    return str(folder / (hashlib.sha256(str(Path(config_path).resolve()).encode()).hexdigest()[:32] + ".lock"))


class FileStore(IntegrationStore):
    allow_env = True

    def __init__(self, *, integrations_path, config_path, auto_reload=False):
        self.integrations_path = Path(integrations_path)
        self.config_path = Path(config_path)
        self.auto_reload = auto_reload
        self._lock = FileLock(lock_path(self.config_path), thread_local=False)
        self._depth = 0
        self._mutex = threading.RLock()
        self._snapshot = None

    # -- reading ---------------------------------------------------------------------------

    def _stamp(self):
        entries = []
        if self.integrations_path.is_dir():
            for entry in os.scandir(self.integrations_path):
                if entry.name.endswith(".json") and not entry.name.startswith("."):
                    try:
                        info = entry.stat()
                        entries.append((entry.name, info.st_mtime_ns, info.st_size, info.st_mode))
                    except OSError:  # a dangling link, say: reported when loading
                        entries.append((entry.name, 0, -1, 0))
        try:
            info = self.config_path.stat()
            entries.append(("config.json", info.st_mtime_ns, info.st_size, info.st_mode))
        except OSError:
            pass
        return tuple(sorted(entries))

    def read_config(self):
        """config.json as a dict ({} when absent); ValueError naming the problem when unreadable."""
        try:
            text = read_local_file(self.config_path)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"{self.config_path}: {exc}") from exc
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
        for name, *_ in snap.stamp:
            if name == "config.json":
                continue
            path = self.integrations_path / name
            try:
                doc = clean_integration(json.loads(read_local_file(path)), allow_env=True)
                if f"{doc['name']}.json" != name:
                    raise ValueError(f"its name {doc['name']!r} does not match the file name; rename one of them.")
                snap.integrations[doc["name"]] = doc
            except FileNotFoundError:  # a dangling link, or removed since the folder was listed
                snap.problems.append({"file": str(path), "error": "it does not exist (a link to a missing file?)."})
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

    @staticmethod
    def _write(path, data, field):
        """Write a file no bigger than local mode reads back (400 naming `field` otherwise)."""
        size, limit = len(encode_json(data).encode("utf-8")), local_file_limit()
        if size > limit:
            raise InvalidInput.single(field, f"{path.name} would hold {size} bytes, more than the {limit} a local-mode file "
                                             "may hold (BACKFLOW_LOCAL_FILE_MAX_BYTES); make it smaller.")
        write_json_atomic(path, data)

    def save_integration(self, doc, *, create):
        with self.transaction():
            self._write(self._integration_file(doc["name"]), doc, "body")
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
            self._write(self.config_path, config, "config.json")
            self._snapshot = None
        return doc

    def delete_route(self, route_id):
        with self.transaction():
            config, raw_routes = self._raw_routes()
            del raw_routes[self._raw_index(raw_routes, route_id)]
            self._write(self.config_path, config, "config.json")
            self._snapshot = None

    def update_config(self, key, value):
        """Set one top-level key of config.json (e.g. mcpServers), keeping everything else."""
        with self.transaction():
            config, _ = self._raw_routes()
            config[key] = value
            self._write(self.config_path, config, "config.json")
            self._snapshot = None

    def record(self, action, object_type, object_id, summary):
        logger.info("%s %s %s", action, object_id, json.dumps(summary))

