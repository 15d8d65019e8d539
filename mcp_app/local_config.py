"""The seed's mcp-config.json for local mode, with BACKFLOW_* environment overrides."""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from backflow.validation import schema_errors

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "enabled": {"type": "boolean"},
        "allowIntegrationCreation": {"type": "boolean"},
        "allowRouteCreation": {"type": "boolean"},
        "integrationsPath": {"type": "string", "minLength": 1},
        "configPath": {"type": "string", "minLength": 1},
        "autoReload": {"type": "boolean"},
    },
    "additionalProperties": False,
}


class LocalConfigError(Exception):
    """The local-mode configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class LocalConfig:
    integrations_path: Path
    config_path: Path
    allow_integration_creation: bool = True
    allow_route_creation: bool = True
    auto_reload: bool = False

    @property
    def scopes(self):
        scopes = {"integrations:read", "routes:read"}
        if self.allow_integration_creation:
            scopes.add("integrations:write")
        if self.allow_route_creation:
            scopes.add("routes:write")
        return frozenset(scopes)


def load_local_config(path=None, environ=None):
    """Read mcp-config.json (optional), apply the environment, check the folders exist."""
    environ = os.environ if environ is None else environ
    settings, base = {}, Path.cwd()
    if path:
        config_file = Path(path).expanduser().resolve()
        try:
            settings = json.loads(config_file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise LocalConfigError(f"MCP config {config_file} does not exist.") from exc
        except json.JSONDecodeError as exc:
            raise LocalConfigError(f"MCP config {config_file} is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc
        errors = schema_errors(CONFIG_SCHEMA, settings)
        if errors:
            details = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
            raise LocalConfigError(f"MCP config {config_file} is invalid: {details}")
        if not settings.get("enabled", True):
            raise LocalConfigError(f"The MCP server is disabled in {config_file} (\"enabled\": false); set it to true to start.")
        base = config_file.parent

    def resolve(env_name, key, default):
        if environ.get(env_name):
            return (Path.cwd() / Path(environ[env_name]).expanduser()).resolve()
        return (base / Path(settings.get(key, default)).expanduser()).resolve()

    config = LocalConfig(
        integrations_path=resolve("BACKFLOW_INTEGRATIONS_PATH", "integrationsPath", "./integrations"),
        config_path=resolve("BACKFLOW_CONFIG_PATH", "configPath", "./config.json"),
        allow_integration_creation=settings.get("allowIntegrationCreation", True),
        allow_route_creation=settings.get("allowRouteCreation", True),
        auto_reload=settings.get("autoReload", False),
    )
    if not config.integrations_path.exists() and config.integrations_path.parent.is_dir():
        # A first run in a new project: make the folder the assistant will write into.
        config.integrations_path.mkdir()
        print(f"backflow: created the integrations folder {config.integrations_path}", file=sys.stderr)
    if not config.integrations_path.is_dir():
        raise LocalConfigError(
            f"Integrations folder {config.integrations_path} does not exist: create it (mkdir -p) or set integrationsPath / BACKFLOW_INTEGRATIONS_PATH."
        )
    if not config.config_path.parent.is_dir():
        raise LocalConfigError(f"The folder of config file {config.config_path} does not exist: create it or set configPath / BACKFLOW_CONFIG_PATH.")
    if config.config_path.is_dir():
        raise LocalConfigError(f"Config path {config.config_path} is a folder; point it at a config.json file.")
    return config
