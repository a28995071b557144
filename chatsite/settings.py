"""Settings for the chat site, all from environment variables.

Defaults run the embedded set-up (SQLite, in-memory layers, the local model);
production sets DATABASE_URL, REDIS_URL and an upstream. Every variable is
listed in .env.example. A bad value stops start-up with a message naming it.
"""

import os
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive, not {value}")
    return value


def secret_key_from_file() -> str:
    """A random key kept in var/ so sessions survive restarts of the embedded set-up."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip() or secret_key_from_file()
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "channels",
    "accounts",
    "conversations",
    "gateway",
]


class Middleware(list):
    """MIDDLEWARE, which also says it holds each Django middleware that a Loop* one stands in for.

    The Loop* ones are Django's own, with their hooks run on the event loop
    rather than each in a thread hop (chatsite/loop_middleware.py). Django's
    deploy checks look for Security, sessions, CSRF and X-Frame-Options by
    their dotted names, and skip the checks of their settings when they are
    not found.
    """

    STANDS_IN_FOR = {
        "django.middleware.security.SecurityMiddleware": "LoopSecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware": "LoopSessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware": "LoopCsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware": "LoopXFrameOptionsMiddleware",
    }

    def __contains__(self, name) -> bool:
        if super().__contains__(name):
            return True
        stand_in = self.STANDS_IN_FOR.get(name)
        return stand_in is not None and super().__contains__(f"chatsite.loop_middleware.{stand_in}")


MIDDLEWARE = Middleware(
    [
        "conversations.csp.content_security_policy",
        "chatsite.loop_middleware.LoopSecurityMiddleware",
        "gateway.middleware.api_middleware",
        "conversations.outages.OutageMiddleware",
        "chatsite.loop_middleware.LoopSessionMiddleware",
        "chatsite.loop_middleware.LoopCommonMiddleware",
        "chatsite.loop_middleware.LoopCsrfViewMiddleware",
        "chatsite.loop_middleware.LoopAuthenticationMiddleware",
        "chatsite.loop_middleware.LoopMessageMiddleware",
        "chatsite.loop_middleware.LoopXFrameOptionsMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
    ]
)

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.signup",
                "accounts.context_processors.costs",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
# Connections per process to PostgreSQL, and seconds a request waits for one before it
# is answered 503: while PostgreSQL is down, that is how long a request takes to fail.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 20, minimum=1)
DB_POOL_TIMEOUT = env_float("DB_POOL_TIMEOUT", 5.0)
# Off only behind a connection pooler in transaction mode that does not keep prepared
# statements (PgBouncer before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
# Threads per process for sync work: Django's sync middleware and views, and database steps
# (conversations/db.py). Each holds at most one connection, so no more than the pool has.
WORKER_THREADS = env_int("WORKER_THREADS", min(8, DB_POOL_MAX_SIZE), minimum=1)
if WORKER_THREADS > DB_POOL_MAX_SIZE:
    raise ImproperlyConfigured(
        f"WORKER_THREADS ({WORKER_THREADS}) must not be more than DB_POOL_MAX_SIZE ({DB_POOL_MAX_SIZE}): "
        "each worker thread may hold a pooled connection"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool instead of a new connection (about 10 ms with SCRAM) per request. Django
    # hands every connection it takes from the pool back at the end of each request or
    # database step (CONN_MAX_AGE stays 0), and the pool checks a connection before
    # handing it out (chatsite/postgresql/base.py, in place of CONN_HEALTH_CHECKS' round
    # trip), so one broken by a PostgreSQL restart is replaced, never used.
    DATABASES["default"]["ENGINE"] = "chatsite.postgresql"
    DATABASES["default"]["OPTIONS"] = {
        # Parameters go to PostgreSQL apart from the query, not quoted into it by psycopg (a
        # measurable part of each query's CPU here).
        "server_side_binding": True,
        # A statement a connection has run 5 times is prepared: PostgreSQL parses and plans it
        # once, not on every run (a /v1 call's key and model lookup: 1.2 ms unprepared, 0.5 ms
        # prepared, back to back). Django turns this off unless told, for connection poolers in
        # transaction mode that lose prepared statements; the pool here is the process's own.
        "prepare_threshold": 5 if DB_PREPARED_STATEMENTS else None,
        "pool": {
            "min_size": 1,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": DB_POOL_TIMEOUT,
            # psycopg_pool retries a failed connection attempt with a backoff that doubles
            # for up to this many seconds; then the next request that needs a connection
            # starts afresh. Short, so that after an outage the site is back within a
            # second of PostgreSQL, not after a backoff grown as long as the outage.
            "reconnect_timeout": 1.0,
        },
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # WAL lets the page read while a reply is being flushed; IMMEDIATE makes a
    # budget reservation's read-check-write one serialised step, as row locks do on PostgreSQL.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def redis_caches(url: str) -> dict:
    """The cache, and the one the rate limits count in (one round trip a count), on the Redis at `url`."""
    return {
        "default": {"BACKEND": "chatsite.redis_cache.SharedPoolRedisCache", "LOCATION": url},
        "ratelimit": {"BACKEND": "chatsite.redis_cache.RateCounterCache", "LOCATION": url},
    }


REDIS_URL = os.environ.get("REDIS_URL", "").strip()
RATELIMIT_USE_CACHE = "ratelimit"
if REDIS_URL:
    CACHES = redis_caches(REDIS_URL)
    # Sessions are read from the cache, written to both: a request's session is a Redis GET instead of a query
    # that the ORM builds (two a message: its POST and its stream). Only a cache all processes share will do:
    # with one per process, a logout in one would leave the session cached, and valid, in the others.
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    # Pub/sub: a published frame reaches every subscribed process at once and
    # nothing is queued for subscribers that are gone.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "ratelimit": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit"},
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

AUTH_USER_MODEL = "accounts.User"


class Backends(list):
    """AUTHENTICATION_BACKENDS, which also says it holds Django's ModelBackend, that UserBackend stands in for.

    A session keeps the path of the backend that logged it in, and Django
    ends a session whose backend is no longer listed: sessions logged in
    before UserBackend are still good, read by ModelBackend. Only UserBackend
    checks passwords.
    """

    def __contains__(self, path) -> bool:
        return super().__contains__(path) or path == "django.contrib.auth.backends.ModelBackend"


AUTHENTICATION_BACKENDS = Backends(["accounts.backends.UserBackend"])
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "conversations:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SIGNUP_ENABLED = env_bool("SIGNUP_ENABLED", True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "").strip() or "UTC"
try:
    import zoneinfo

    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"TIME_ZONE {TIME_ZONE!r} is not a known time zone") from None
# The site speaks English only: no LocaleMiddleware, no translations of its own. Off, Django's get_language()
# is a constant instead of a context-local lookup (about 5 µs), which every {% url %}, number and date in a
# template makes: a sixth of a sent message's rendering.
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# Every page's policy (conversations/csp.py): scripts, styles, fonts, images and connections from
# this site only; no inline script, no eval, no <style> element; no framing, no plugins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",  # style= only: Markdown tables' text-align (filtered by nh3)
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# HTTPS, turned on by configuration in production (README, "Deploy"); off by default so that
# `make run` works on plain http://127.0.0.1.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health checks come from the host itself, over plain HTTP, straight to a server process.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)


def env_proxy_ssl_header(name: str) -> tuple[str, str] | None:
    """The header a TLS-terminating proxy sets to "https" (nginx: X-Forwarded-Proto), as Django wants it.

    Set it only behind a proxy that always overwrites the header: Django then believes any request
    carrying it came over HTTPS.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not all(part.isascii() and part.isalnum() for part in raw.split("-")):
        raise ImproperlyConfigured(f"{name} must be a header name such as X-Forwarded-Proto, not {raw!r}")
    return ("HTTP_" + raw.upper().replace("-", "_"), "https")


SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")

# The upstream. Without OPENAI_BASE_URL the site talks to the embedded local
# model that `make run` starts on LOCAL_MODEL_PORT.
LOCAL_MODEL_PORT = env_int("LOCAL_MODEL_PORT", 8081, minimum=1)
UPSTREAM_IS_LOCAL = not os.environ.get("OPENAI_BASE_URL", "").strip()
OPENAI_BASE_URL = (os.environ.get("OPENAI_BASE_URL", "").strip() or f"http://127.0.0.1:{LOCAL_MODEL_PORT}/v1").rstrip(
    "/"
)
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "").strip() or ("local" if UPSTREAM_IS_LOCAL else "")
if not UPSTREAM_IS_LOCAL and not OPENAI_API_KEY:
    raise ImproperlyConfigured("OPENAI_BASE_URL is set but OPENAI_API_KEY is empty")
if not OPENAI_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"OPENAI_BASE_URL must start with http:// or https://, not {OPENAI_BASE_URL!r}")
DEFAULT_MODEL_EXPLICIT = bool(os.environ.get("DEFAULT_MODEL", "").strip())
DEFAULT_MODEL = os.environ.get("DEFAULT_MODEL", "").strip() or ("smollm2-135m" if UPSTREAM_IS_LOCAL else "gpt-4o-mini")
# Catalog id of the Realtime model a client secret is minted for when the app names none.
REALTIME_DEFAULT_MODEL = os.environ.get("REALTIME_DEFAULT_MODEL", "").strip() or "gpt-realtime-2"

# Seconds to wait for the upstream to connect, and for the next byte of a reply.
UPSTREAM_CONNECT_TIMEOUT = env_float("UPSTREAM_CONNECT_TIMEOUT", 10.0)
UPSTREAM_READ_TIMEOUT = env_float("UPSTREAM_READ_TIMEOUT", 60.0)
# Retries of 429 and 5xx answers before the first token (the openai SDK's
# max_retries), with exponential backoff from UPSTREAM_RETRY_BASE_DELAY seconds
# or the provider's Retry-After; one longer than UPSTREAM_RETRY_MAX_WAIT ends
# the reply at once instead of making the user wait.
UPSTREAM_RETRIES = env_int("UPSTREAM_RETRIES", 3)
UPSTREAM_RETRY_BASE_DELAY = env_float("UPSTREAM_RETRY_BASE_DELAY", 0.5)
UPSTREAM_RETRY_MAX_WAIT = env_float("UPSTREAM_RETRY_MAX_WAIT", 20.0)
# Seconds between two reads of the upstream's model list (GET /models): the picker offers only what it serves.
UPSTREAM_MODELS_INTERVAL = env_float("UPSTREAM_MODELS_INTERVAL", 300.0)
# Whether users see what their replies and their month cost; staff always see it in the admin.
SHOW_COSTS = env_bool("SHOW_COSTS", False)


def env_optional_int(name: str) -> int | None:
    return env_int(name, 0, minimum=1) if os.environ.get(name, "").strip() else None


def env_optional_usd(name: str) -> Decimal | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be an amount in US dollars such as 25 or 7.50, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be zero or more, not {raw!r}")
    return value


def env_rate(name: str, default: str) -> str:
    """One or more django-ratelimit windows such as 30/m or 10/m,50/h,200/d; "off" turns the limit off."""
    raw = os.environ.get(name, "").strip() or default
    if raw == "off":
        return raw
    for window in raw.split(","):
        count, _, period = window.strip().partition("/")
        multiplier = period[:-1] or "1"
        valid = (
            count.isascii() and count.isdigit() and period and period[-1] in "smhd"
            and multiplier.isascii() and multiplier.isdigit() and int(multiplier) > 0
        )  # fmt: skip
        if not valid:
            raise ImproperlyConfigured(
                f"{name} must look like 30/m or 5/10s (per s, m, h or d), several of them such as "
                f"10/m,50/h,200/d, or off, not {raw!r}"
            )
    return raw


# Quotas for users who have no limit of their own; unset means unlimited.
QUOTA_TOKENS_PER_HOUR = env_optional_int("QUOTA_TOKENS_PER_HOUR")
QUOTA_TOKENS_PER_DAY = env_optional_int("QUOTA_TOKENS_PER_DAY")
QUOTA_USD_PER_MONTH = env_optional_usd("QUOTA_USD_PER_MONTH")
QUOTA_MAX_TOKENS_PER_REQUEST = env_optional_int("QUOTA_MAX_TOKENS_PER_REQUEST")
QUOTA_REALTIME_MINUTES_PER_DAY = env_optional_int("QUOTA_REALTIME_MINUTES_PER_DAY")


def env_signup_limit(name: str, default: int | Decimal | None, parse) -> int | Decimal | None:
    """A limit given to each user who signs up: unset, the default; "off", none of their own."""
    raw = os.environ.get(name, "").strip()
    if raw == "off":
        return None
    return parse(name) if raw else default


# Limits written into the account of each user who signs up themselves, so that a stranger
# never gets unlimited use; staff change them per user like any other limit. "off": none of
# their own, so the QUOTA_* setting applies.
SIGNUP_LIMITS = {
    "tokens_per_hour": env_signup_limit("SIGNUP_TOKENS_PER_HOUR", None, env_optional_int),
    "tokens_per_day": env_signup_limit("SIGNUP_TOKENS_PER_DAY", 50_000, env_optional_int),
    "usd_per_month": env_signup_limit("SIGNUP_USD_PER_MONTH", Decimal("1.00"), env_optional_usd),
    "max_tokens_per_request": env_signup_limit("SIGNUP_MAX_TOKENS_PER_REQUEST", None, env_optional_int),
    "realtime_minutes_per_day": env_signup_limit("SIGNUP_REALTIME_MINUTES_PER_DAY", 10, env_optional_int),
}
# Sign-up only with an e-mail address at one of these domains (comma-separated); empty: anyone.
SIGNUP_EMAIL_DOMAINS = [
    d.strip().lower().lstrip("@") for d in os.environ.get("SIGNUP_EMAIL_DOMAINS", "").split(",") if d.strip()
]
# Budget held for a call counts at most this long: what a dead process leaves behind expires.
RESERVATION_TTL = env_int("RESERVATION_TTL", 3600, minimum=60)

# Rate limits (django-ratelimit), shared through the cache: Redis when REDIS_URL is set.
RATELIMIT_MESSAGES = env_rate("RATELIMIT_MESSAGES", "30/m")
RATELIMIT_LOGIN = env_rate("RATELIMIT_LOGIN", "10/m")
RATELIMIT_SIGNUP = env_rate("RATELIMIT_SIGNUP", "10/h")
RATELIMIT_API = env_rate("RATELIMIT_API", "60/m")  # per user, over all their keys
RATELIMIT_API_IP = env_rate("RATELIMIT_API_IP", "300/m")
# Origins whose web apps may call /v1 from the browser (a Flutter web build), or *.
CORS_ALLOWED_ORIGINS = [o.strip() for o in os.environ.get("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip()]
# Behind a reverse proxy the client's address comes from this header, set by the
# proxy, and only on requests from TRUSTED_PROXIES; a header a client sends
# itself is never believed. Unset: the address of the peer.
TRUSTED_PROXY_HEADER = os.environ.get("TRUSTED_PROXY_HEADER", "").strip()
TRUSTED_PROXIES = [p.strip() for p in os.environ.get("TRUSTED_PROXIES", "127.0.0.1,::1").split(",") if p.strip()]
RATELIMIT_IP_META_KEY = "accounts.ratelimits.client_ip"

# Turns of a chat that no longer fit the model's context window are summarised
# by this model (a catalog id); empty means the chat's own model.
SUMMARY_MODEL = os.environ.get("SUMMARY_MODEL", "").strip()
# A new chat is named by a short call (SUMMARY_MODEL's, billed to the user) after its first reply;
# off: it keeps its first message, cut short, as its name.
CHAT_TITLES = env_bool("CHAT_TITLES", True)

MESSAGE_MAX_CHARS = env_int("MESSAGE_MAX_CHARS", 32_000, minimum=1)
SYSTEM_PROMPT_MAX_CHARS = env_int("SYSTEM_PROMPT_MAX_CHARS", 8_000, minimum=1)

# Images attached to chat messages (for models that accept them) are kept under MEDIA_ROOT/chat-images/
# and served only to their owner, by the site: never publish MEDIA_ROOT (there is no MEDIA_URL).
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
CHAT_IMAGE_MAX_BYTES = env_int("CHAT_IMAGE_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
CHAT_IMAGES_PER_MESSAGE = env_int("CHAT_IMAGES_PER_MESSAGE", 4, minimum=1)

# Streaming: live text reaches watchers and /v1 apps in frames at most this often (seconds),
# and is written to the database at most this often while a reply streams.
STREAM_FRAME_INTERVAL = env_float("STREAM_FRAME_INTERVAL", 0.05)
STREAM_FLUSH_INTERVAL = env_float("STREAM_FLUSH_INTERVAL", 1.0)
# An open SSE stream sends a keep-alive comment this often (seconds), so that
# proxies keep it open; a watcher of a reply generated in another process then
# also checks that the reply still lives.
STREAM_KEEPALIVE = env_float("STREAM_KEEPALIVE", 10.0)
# A streaming reply whose row has not been touched for this long belongs to a
# process that died: it is marked interrupted, its text kept.
STREAM_STALE_AFTER = env_float("STREAM_STALE_AFTER", 30.0)
# Each server process runs `manage.py sweep`'s work this often (seconds; by default
# half of STREAM_STALE_AFTER); 0: only while it has work of its own, and cron runs the command.
SWEEP_INTERVAL = (
    0.0 if os.environ.get("SWEEP_INTERVAL", "").strip() == "0" else env_float("SWEEP_INTERVAL", STREAM_STALE_AFTER / 2)
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # httpx2 is the httpx the openai SDK sends with: a line for every upstream call, as httpx's would be.
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}
