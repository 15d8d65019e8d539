"""Backflow settings: everything comes from the environment (django-environ).

The embedded defaults (SQLite under var/, in-memory channel layer, local-memory cache) need no
other service; DATABASE_URL and REDIS_URL switch on Postgres and Redis.
"""

import logging
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# `make` writes generated SECRET_KEY / BACKFLOW_SECRETS_KEY here on first use; real environment
# variables win over it.
environ.Env.read_env(VAR_DIR / "local.env")

# The environment variables Backflow itself reads (every env read below, and the BACKFLOW_*
# variables of its commands): its own configuration and credentials. No tenant secret and no
# template ever takes its value from one (import_config, {{env.NAME}}: backflow.redaction.
# is_platform_variable). A new setting's variable is covered by naming it here unless a prefix
# covers it; integrations_app/tests/test_transfer_platform_env.py checks every read below.
PLATFORM_ENV_PREFIXES = ("BACKFLOW_", "DJANGO_", "LOG_")
PLATFORM_ENV_NAMES = frozenset({
    "SECRET_KEY", "SECRET_KEY_FALLBACKS", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DATABASE_URL", "REDIS_URL",
    "CONN_MAX_AGE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "JWT_ACCESS_MINUTES", "JWT_REFRESH_DAYS",
})


def _required(name, how):
    value = env.str(name, default="")
    if not value:
        raise ImproperlyConfigured(f"{name} is not set: {how}")
    return value


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = _required("SECRET_KEY", "set it in the environment (make run generates one in var/local.env).")

# Old keys still accepted for signatures (sessions, signed cookies) while SECRET_KEY is rotated.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Behind a TLS-terminating proxy (see docs/operator-guide.md): cookies only over HTTPS, HSTS, and
# the proxy's X-Forwarded-Proto trusted. Off by default so `make run` works on plain http://127.0.0.1.
BACKFLOW_HTTPS = env.bool("BACKFLOW_HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = BACKFLOW_HTTPS
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if BACKFLOW_HTTPS else 0)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BACKFLOW_TRUST_X_FORWARDED_PROTO", default=BACKFLOW_HTTPS) else None

INSTALLED_APPS = [
    "backflow.apps.DaphneRunserver",  # daphne's runserver (backflow/apps.py)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",  # rotated and signed-out refresh tokens (/api/auth/logout)
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "tenants",
    "integrations_app",
    "entities_app",
    "workflows_app",
    "mcp_app",
    "django_tasks",
    "django_tasks_db",
    "oauth2_provider",
]

# Workflow runs are queued in the database and executed by `manage.py run_worker` processes.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "backflow.api_errors.refuse_nul_in_path",
    "backflow.api_errors.OutageMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backflow.urls"
ASGI_APPLICATION = "backflow.asgi.application"
WSGI_APPLICATION = "backflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "backflow" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'backflow.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
# With CONN_MAX_AGE > 0 (for the sync processes: run_worker, mcp_stdio; under daphne each request
# has a thread of its own, so Django advises 0 there), a kept connection is checked before it is
# reused: after a database restart the next task reconnects instead of failing on a dead connection.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the task worker and the server read while the other writes; with WAL,
    # synchronous=NORMAL cannot corrupt the file and saves a disk flush per commit.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    from redis.asyncio.retry import Retry as _AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One immediate retry on a new connection: after Redis restarts, every pooled connection is
    # dead and would otherwise fail one request each (a 503) before the pool notices. While Redis
    # is down the retry fails as fast as the first try (refused), so nothing hangs.
    # Connections each process may open to Redis, per pool (the cache's, and the channel layer's
    # per event loop). redis-py's default of 100 made a burst of 200 SSE messages at once fail
    # with 503 "Too many connections" (bench/load_mcp.py); mind Redis's own maxclients (10000).
    BACKFLOW_REDIS_MAX_CONNECTIONS = env.int("BACKFLOW_REDIS_MAX_CONNECTIONS", default=1000)
    CACHES = {"default": {"BACKEND": "backflow.cache.SharedPoolRedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"retry": Retry(NoBackoff(), 1), "max_connections": BACKFLOW_REDIS_MAX_CONNECTIONS}}}
    # The same for redis-py's asyncio clients (the channel layer's, the routes' counts made on the event loop).
    REDIS_ASYNC_OPTIONS = {"retry": _AsyncRetry(NoBackoff(), 1), "max_connections": BACKFLOW_REDIS_MAX_CONNECTIONS}
    # channels_redis keeps the messages of all of one process's SSE sessions (process-specific
    # channels, mcp.sse.*) in one Redis list, capped by one `capacity` (100 by default): 200
    # sessions posting at once overflowed it and their POSTs got 503 (bench/load_mcp.py). The cap
    # is for the whole process, so it is set for thousands of sessions; messages still expire in 60 s.
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                    "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_ASYNC_OPTIONS}], "channel_capacity": {"mcp.sse.*": 20000}}}
    }
else:
    CACHES = {"default": {"BACKEND": "backflow.cache.LocalCache"}}  # LocMemCache with a one-step counter
    REDIS_ASYNC_OPTIONS = {}  # for a Redis cache configured otherwise (tests): redis-py's defaults
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `collectstatic` puts the static files whitenoise serves (/readyz checks they are there).
STATIC_ROOT = Path(env.str("BACKFLOW_STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Bodies above this are refused with 413 before any parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("BACKFLOW_MAX_BODY_BYTES", default=1024 * 1024)
# JSON bodies (REST, webhooks, tenant routes) may nest arrays/objects at most this deep (400
# beyond): deeper ones crash recursive parsers and validators (backflow/jsonbody.py).
BACKFLOW_JSON_MAX_DEPTH = env.int("BACKFLOW_JSON_MAX_DEPTH", default=64)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.BearerAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.IsTenantPrincipal"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["backflow.parsers.JSONParser"],  # bounded depth, no NaN (backflow/jsonbody.py)
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "backflow.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backflow.api_errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
    # Each refresh answers a new refresh token and blacklists the one it was given (a stolen copy
    # dies at its owner's next refresh). JWTs also carry fingerprints of the password and the
    # memberships they were issued under (tenants/authentication.py).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Backflow API",
    "DESCRIPTION": (
        "Multi-tenant integrations, routes, workflows, apps and entities. Authenticate with "
        "`Authorization: Bearer <api key or JWT>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "tenants.openapi.drop_stray_path_parameters"],
}

# Stored credentials are encrypted with this Fernet key (see backflow/crypto.py).
BACKFLOW_SECRETS_KEY = _required(
    "BACKFLOW_SECRETS_KEY",
    "generate one with `python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'` (make run generates one in var/local.env).",
)

BACKFLOW_EGRESS_ALLOW = env.list("BACKFLOW_EGRESS_ALLOW", default=[])
# Upstream answers above this size fail the route (502) instead of filling memory.
BACKFLOW_UPSTREAM_MAX_BYTES = env.int("BACKFLOW_UPSTREAM_MAX_BYTES", default=5 * 1024 * 1024)
# One message read from a tenant's HTTP/SSE MCP server (a JSON answer, or one SSE event: a stream
# may last for hours), decoded; a larger one fails the call (backflow/peer_bodies.py).
BACKFLOW_MCP_MAX_MESSAGE_BYTES = env.int("BACKFLOW_MCP_MAX_MESSAGE_BYTES", default=1024 * 1024)
# A workflow step's result, in bytes of JSON; a larger one fails the step (the run's output is the
# last step's result, so it is bounded too).
BACKFLOW_STEP_RESULT_MAX_BYTES = env.int("BACKFLOW_STEP_RESULT_MAX_BYTES", default=1024 * 1024)
# A running workflow run whose worker has not signalled for this long is failed (worker died).
BACKFLOW_RUN_STALE_SECONDS = env.int("BACKFLOW_RUN_STALE_SECONDS", default=120)
# How often each worker looks for due schedules and stale runs.
BACKFLOW_SCHEDULER_INTERVAL = env.float("BACKFLOW_SCHEDULER_INTERVAL", default=10.0)

# Local mode (mcp_stdio, serve_local, import_config): the largest integrations/<name>.json or
# config.json read or written, in bytes; only regular files are read (FIFOs and devices are reported).
BACKFLOW_LOCAL_FILE_MAX_BYTES = env.int("BACKFLOW_LOCAL_FILE_MAX_BYTES", default=1024 * 1024)

# Largest entity `data` document, in bytes of JSON.
BACKFLOW_ENTITY_MAX_BYTES = env.int("BACKFLOW_ENTITY_MAX_BYTES", default=256 * 1024)
# Route invocations allowed per tenant: (calls, seconds); 429 beyond.
BACKFLOW_ROUTE_RATE_LIMIT = tuple(env.list("BACKFLOW_ROUTE_RATE_LIMIT", cast=int, default=[6000, 60]))
BACKFLOW_LLM_BASE_URL = env.str("BACKFLOW_LLM_BASE_URL", default="")
BACKFLOW_LLM_API_KEY = env.str("BACKFLOW_LLM_API_KEY", default="")
BACKFLOW_LLM_MODEL = env.str("BACKFLOW_LLM_MODEL", default="")

# OAuth 2.1 for remote MCP (django-oauth-toolkit). Behind a proxy, set BACKFLOW_PUBLIC_URL to the
# address clients use (e.g. https://backflow.example.com): it names the issuer and the MCP resource.
BACKFLOW_PUBLIC_URL = env.str("BACKFLOW_PUBLIC_URL", default="")
# Failed password checks per client address and username, on every door (JWT token endpoint,
# sign-in page, admin sign-in, password change): (failures, seconds). The one authentication
# backend counts them (tenants/signin.py).
BACKFLOW_SIGN_IN_RATE_LIMIT = tuple(env.list("BACKFLOW_SIGN_IN_RATE_LIMIT", cast=int, default=[10, 300]))
AUTHENTICATION_BACKENDS = ["tenants.signin.SignInLimitedBackend"]
# Proxies in front of Backflow that append the address they saw to X-Forwarded-For (nginx's
# $proxy_add_x_forwarded_for): the client address of every limit is the one the outermost of them
# saw, the Nth entry from the right (tenants/client_address.py). 0: REMOTE_ADDR.
BACKFLOW_TRUSTED_PROXIES = env.int("BACKFLOW_TRUSTED_PROXIES", default=0)
if BACKFLOW_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("BACKFLOW_TRUSTED_PROXIES is the number of proxies in front of Backflow: 0 or more.")
BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT = tuple(env.list("BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT", cast=int, default=[20, 3600]))
OAUTH2_PROVIDER = {
    "SCOPES_BACKEND_CLASS": "tenants.oauth.TenantScopes",
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,  # S256 only
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("BACKFLOW_OAUTH_ACCESS_TOKEN_SECONDS", default=3600),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "DCR_ENABLED": True,
    "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
    # Client ID metadata documents (the MCP specification's preferred registration); DOT's fetcher
    # refuses private addresses.
    "CIMD_ENABLED": env.bool("BACKFLOW_OAUTH_CIMD", default=True),
    "OAUTH2_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["none", "client_secret_post", "client_secret_basic"],
    "OAUTH2_GRANT_TYPES_SUPPORTED": ["authorization_code", "refresh_token"],
    "OAUTH2_PROTECTED_RESOURCE_NAME": "Backflow MCP",
    **({"OIDC_ISS_ENDPOINT": BACKFLOW_PUBLIC_URL.rstrip("/")} if BACKFLOW_PUBLIC_URL else {}),
}

# MCP tool calls allowed per principal: (calls, seconds).
BACKFLOW_MCP_RATE_LIMIT = tuple(env.list("BACKFLOW_MCP_RATE_LIMIT", cast=int, default=[600, 60]))
# Idle SSE streams get a comment this often so proxies keep them open.
BACKFLOW_SSE_KEEPALIVE_SECONDS = env.float("BACKFLOW_SSE_KEEPALIVE_SECONDS", default=15.0)

# No tenant may slow another (docs/security.md, "Bounded work per tenant"):
# threads for the database work of MCP tool calls and tenant routes (each keeps one database
# connection), and how many of them one tenant may hold at once;
BACKFLOW_SYNC_THREADS = env.int("BACKFLOW_SYNC_THREADS", default=16)
BACKFLOW_SYNC_THREADS_PER_TENANT = env.int("BACKFLOW_SYNC_THREADS_PER_TENANT", default=4)
# route calls of one tenant in flight at once in one process (503 beyond: the shared upstream
# connection pool stays open to the others);
BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT = env.int("BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT", default=50)
# Threads for outbound name lookups per process, and how many one tenant's lookups may hold at once
# (a name whose DNS server never answers holds its thread for the resolver's whole timeout).
BACKFLOW_LOOKUP_THREADS = env.int("BACKFLOW_LOOKUP_THREADS", default=16)
BACKFLOW_LOOKUPS_PER_TENANT = env.int("BACKFLOW_LOOKUPS_PER_TENANT", default=2)
# Prepared statements on the event loop's own PostgreSQL connections (backflow/loop_postgres.py);
# off behind a pooler that cannot keep them (PgBouncer in transaction mode before 1.21 or without
# max_prepared_statements).
BACKFLOW_LOOP_POSTGRES_PREPARE = env.bool("BACKFLOW_LOOP_POSTGRES_PREPARE", default=True)
# Route invocation records waiting for their batched insert, per web process; past it new ones are dropped (and counted).
BACKFLOW_ROUTE_INVOCATION_BUFFER = env.int("BACKFLOW_ROUTE_INVOCATION_BUFFER", default=10000)
# a tenant's runs executing at once (the rest wait in the queue) and runs queued per minute (429 beyond);
BACKFLOW_TENANT_RUNNING_RUNS = env.int("BACKFLOW_TENANT_RUNNING_RUNS", default=4)
# runs one `run_worker` process executes at once, each on a thread (a slow run holds up no other);
BACKFLOW_WORKER_CONCURRENCY = env.int("BACKFLOW_WORKER_CONCURRENCY", default=4)
# seconds each thread of `run_worker` keeps its database connection (CONN_MAX_AGE for workers only);
BACKFLOW_WORKER_CONN_MAX_AGE = env.int("BACKFLOW_WORKER_CONN_MAX_AGE", default=300)
BACKFLOW_TENANT_RUNS_PER_MINUTE = env.int("BACKFLOW_TENANT_RUNS_PER_MINUTE", default=120)
# schedule triggers over all of a tenant's workflows (each fires at most once a minute; 400 beyond);
BACKFLOW_SCHEDULES_PER_TENANT = env.int("BACKFLOW_SCHEDULES_PER_TENANT", default=20)
# how deep webhook -> run -> upstream call -> webhook chains may go (X-Backflow-Depth; 508 beyond);
BACKFLOW_MAX_CALL_DEPTH = env.int("BACKFLOW_MAX_CALL_DEPTH", default=3)
# open SSE streams per API key, JWT user or OAuth grant (429 beyond).
BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL = env.int("BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL", default=20)

# API keys: last_used_at is written at most this often per key, to keep reads read-only.
BACKFLOW_KEY_LAST_USED_INTERVAL = timedelta(seconds=60)
# API keys a process remembers as verified (tenants/keycache.py), least recently used out first.
BACKFLOW_KEY_CACHE_SIZE = env.int("BACKFLOW_KEY_CACHE_SIZE", default=4096)

# Operations (docs/operator-guide.md, "Monitoring"): GET /metrics is served only with this token
# set, to callers sending it as a bearer token; a tenant label on route and tool-call metrics
# (one series per tenant: mind the cost); /readyz's budget for all its checks; how often each
# run_worker records its heartbeat, and after how long without one it counts as gone.
BACKFLOW_METRICS_TOKEN = env.str("BACKFLOW_METRICS_TOKEN", default="")
if BACKFLOW_METRICS_TOKEN and (len(BACKFLOW_METRICS_TOKEN) < 16 or any(c.isspace() for c in BACKFLOW_METRICS_TOKEN)):
    raise ImproperlyConfigured("BACKFLOW_METRICS_TOKEN must be at least 16 characters, without spaces (it guards /metrics).")
BACKFLOW_METRICS_TENANT_LABEL = env.bool("BACKFLOW_METRICS_TENANT_LABEL", default=False)
BACKFLOW_READYZ_TIMEOUT = env.float("BACKFLOW_READYZ_TIMEOUT", default=5.0)
BACKFLOW_WORKER_HEARTBEAT_SECONDS = env.float("BACKFLOW_WORKER_HEARTBEAT_SECONDS", default=10.0)
BACKFLOW_WORKER_STALE_SECONDS = env.float("BACKFLOW_WORKER_STALE_SECONDS", default=60.0)

LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT is plain or json, not {LOG_FORMAT!r}.")
if LOG_FORMAT == "json":
    logging.captureWarnings(True)  # Python's warnings too become JSON lines (logger py.warnings)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "backflow.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "backflow.logs.JsonFormatter"},
    },
    # stderr only: stdout is reserved for the MCP protocol in mcp_stdio.
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": LOG_FORMAT,
                            "filters": ["request_id"]}},
    "root": {"handlers": ["stderr"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The SDK logs every stateless request at INFO.
        "mcp.server.streamable_http": {"level": "WARNING"},
        # httpx (and the MCP SDK's httpx2) log full URLs at INFO; an api_key credential may travel in
        # the query string.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}
