"""cpweb settings: every deployment knob is an environment variable (SPEC §7).

The defaults give the embedded setup a newcomer runs: SQLite and the in-memory
channel layer, one process. ``DATABASE_URL`` and ``REDIS_URL`` move it to
PostgreSQL and Redis. A bad value stops start-up with an error naming the
variable.
"""

import base64
import ipaddress
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
import phonenumbers
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import URLValidator

from cpweb.env import env_bool, env_choice, env_int, env_list, env_mapping, env_number, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CPWEB_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "static").mkdir(exist_ok=True)


def _url_setting(name: str, default: str = "") -> str:
    value = env_str(name, default)
    if value:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except ValidationError as exc:
            raise ImproperlyConfigured(f"{name} must be an http(s) URL (got {value!r})") from exc
    return value


def _origin_setting(name: str) -> str:
    """A web origin (scheme://host[:port]), as browsers compare it for postMessage."""
    value = env_str(name).rstrip("/")
    if value:
        parts = urlsplit(value)
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
            or "*" in value
        ):
            raise ImproperlyConfigured(
                f"{name} must be an origin like https://crm.example.com (got {value!r})"
            )
        value = f"{parts.scheme}://{parts.netloc.lower()}"
    return value


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    # No key given: keep a random one in var/ so sessions survive restarts of
    # the embedded setup without anyone ever shipping a well-known key.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "phonenumber_field",
    "directory",
    "chat",
    "crm",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "cpweb.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "cpweb.urls"
ASGI_APPLICATION = "cpweb.asgi.application"

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
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'cpweb.sqlite3'}")
try:
    _database = dj_database_url.parse(DATABASE_URL)
except Exception as exc:  # dj_database_url raises several exception types
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from exc
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # WAL lets readers run while a writer commits; IMMEDIATE takes the
        # write lock at BEGIN so concurrent writers queue instead of failing.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif _database["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        f"DATABASE_URL must be sqlite:///PATH or postgres://… (got engine {_database['ENGINE']})"
    )
# Keep connections open between requests and socket frames: database work
# from the websocket consumers runs on a few long-lived threads (cpweb/db.py),
# and reconnecting for every frame cost more than the queries themselves.
_database["CONN_MAX_AGE"] = env_int("CP_DB_CONN_MAX_AGE", 300)
_database["CONN_HEALTH_CHECKS"] = True
# Threads (and connections) per process for the websocket consumers' database
# work (cpweb/db.py): commits overlap on PostgreSQL; SQLite has one writer.
CP_DB_THREADS = env_int(
    "CP_DB_THREADS", 1 if _database["ENGINE"] == "django.db.backends.sqlite3" else 4, minimum=1
)
DATABASES = {"default": _database}
# Seconds between handing freed memory back to the OS (cpweb/memory.py); 0: never.
CP_MEMORY_TRIM_SECONDS = env_int("CP_MEMORY_TRIM_SECONDS", 30)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
# Separate deployments (or test servers) sharing one Redis.
CP_CHANNEL_PREFIX = env_str("CP_CHANNEL_PREFIX", "cpweb")
# The in-memory layer: each process's hub channel receives every push
# (chat/hub.py); its queue must hold a burst of events, not the default 100.
_LAYER_CAPACITY = env_int("CP_CHANNEL_CAPACITY", 10_000, minimum=100)
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL (got {REDIS_URL!r})")
    CHANNEL_LAYERS = {
        "default": {
            # Pub/sub: a push is one PUBLISH and streams into each process's hub
            # without a round trip per event (chat/hub.py says why, and how a
            # push that pub/sub dropped is noticed).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 5, "socket_connect_timeout": 5}],
                "prefix": CP_CHANNEL_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": _LAYER_CAPACITY},
        }
    }

# --- Auth, i18n, static -----------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/console/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

# text: each message as it is (identification decisions are JSON anyway);
# json: every line a JSON object (cpweb/logs.py), for a log shipper.
CP_LOG_FORMAT = env_choice("CP_LOG_FORMAT", ["text", "json"], "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "cpweb.logs.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            **({"formatter": "json"} if CP_LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("CP_LOG_LEVEL", "INFO")},
}

# --- cpweb ------------------------------------------------------------------

CP_MODE = env_choice("CP_MODE", ["standalone", "crm"], "standalone")

# /healthz: how long the database and the channel layer get to answer.
CP_HEALTH_TIMEOUT = env_number("CP_HEALTH_TIMEOUT", 2, minimum=0.1)
# /metrics answers only with this bearer token (unset: 503).
CP_METRICS_TOKEN = env_str("CP_METRICS_TOKEN")
# Key of the hashes that stand for identifiers in the identification log
# (unset: derived from DJANGO_SECRET_KEY, so hashes change if it does).
CP_LOG_HASH_KEY = env_str("CP_LOG_HASH_KEY")

CP_DEFAULT_REGION = env_str("CP_DEFAULT_REGION", "US").upper()
if CP_DEFAULT_REGION not in phonenumbers.SUPPORTED_REGIONS:
    raise ImproperlyConfigured(
        f"CP_DEFAULT_REGION must be an ISO 3166 alpha-2 country code known to phonenumbers "
        f"(got {CP_DEFAULT_REGION!r})"
    )
PHONENUMBER_DEFAULT_REGION = CP_DEFAULT_REGION
PHONENUMBER_DB_FORMAT = "E164"

CP_API_TOKEN = env_str("CP_API_TOKEN")

WEBCHAT_IDENTITY_SECRET = env_str("WEBCHAT_IDENTITY_SECRET")
WEBCHAT_REQUIRE_VERIFIED = env_bool("WEBCHAT_REQUIRE_VERIFIED", False)
if WEBCHAT_REQUIRE_VERIFIED and not WEBCHAT_IDENTITY_SECRET:
    raise ImproperlyConfigured(
        "WEBCHAT_REQUIRE_VERIFIED=true needs WEBCHAT_IDENTITY_SECRET to check identity_hash"
    )
WEBCHAT_ALLOWED_ORIGINS = env_list("WEBCHAT_ALLOWED_ORIGINS")

# Websocket limits, per connection (visitor and console sockets alike).
CP_WS_MAX_FRAME_BYTES = env_int("CP_WS_MAX_FRAME_BYTES", 16_384, minimum=256)
CP_WS_FRAMES_PER_SECOND = env_number("CP_WS_FRAMES_PER_SECOND", 10, minimum=0.1)
CP_WS_FRAME_BURST = env_number("CP_WS_FRAME_BURST", 30, minimum=1)
CP_MAX_MESSAGE_CHARS = env_int("CP_MAX_MESSAGE_CHARS", 4_000, minimum=1)
# Per client address (chat/limits.py); 0 turns a limit off. Visitors behind
# one office or carrier NAT share an address, hence the generous defaults.
CP_WEBCHAT_STARTS_PER_MINUTE = env_int("CP_WEBCHAT_STARTS_PER_MINUTE", 30)
CP_WS_MAX_SOCKETS_PER_ADDRESS = env_int("CP_WS_MAX_SOCKETS_PER_ADDRESS", 50)
# Proxies (addresses or networks) whose X-Forwarded-For names the client.
CP_TRUSTED_PROXIES: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
for _proxy in env_list("CP_TRUSTED_PROXIES"):
    try:
        CP_TRUSTED_PROXIES.append(ipaddress.ip_network(_proxy, strict=False))
    except ValueError:
        raise ImproperlyConfigured(
            f"CP_TRUSTED_PROXIES must list IP addresses or networks like 10.0.0.0/8 "
            f"(got {_proxy!r})"
        ) from None

# --- Channel webhooks (SPEC §5) ---------------------------------------------

# Largest webhook body accepted from Sinch (callbacks are a few KiB).
CP_WEBHOOK_MAX_BYTES = env_int("CP_WEBHOOK_MAX_BYTES", 1_048_576, minimum=1024)
# Work that must not hold up a webhook's answer (platform names, agent replies
# to Sinch) runs on a small pool of threads per process (chat/background.py).
CP_BACKGROUND_WORKERS = env_int("CP_BACKGROUND_WORKERS", 4, minimum=1)

SINCH_CONVERSATION_WEBHOOK_SECRET = env_str("SINCH_CONVERSATION_WEBHOOK_SECRET")
# Signed callbacks older (or further in the future) than this are refused;
# their nonces are remembered for as long.
SINCH_WEBHOOK_MAX_AGE = env_int("SINCH_WEBHOOK_MAX_AGE", 300, minimum=1)
SINCH_API_BASE_URL = _url_setting("SINCH_API_BASE_URL", "https://us.conversation.api.sinch.com")
# Conversation API credentials (an access key of the project): OAuth2 client
# credentials exchanged at SINCH_AUTH_URL for a bearer token.
SINCH_PROJECT_ID = env_str("SINCH_PROJECT_ID")
SINCH_KEY_ID = env_str("SINCH_KEY_ID")
SINCH_KEY_SECRET = env_str("SINCH_KEY_SECRET")
if bool(SINCH_KEY_ID) != bool(SINCH_KEY_SECRET):
    raise ImproperlyConfigured("SINCH_KEY_ID and SINCH_KEY_SECRET must be set together")
SINCH_AUTH_URL = _url_setting("SINCH_AUTH_URL", "https://auth.sinch.com/oauth2/token")
SINCH_API_TIMEOUT = env_number("SINCH_API_TIMEOUT", 5, minimum=0.1)
# How long a fetched platform name is trusted before it is fetched again.
SINCH_NAME_CACHE_SECONDS = env_int("SINCH_NAME_CACHE_SECONDS", 86_400)

SINCH_VOICE_APP_KEY = env_str("SINCH_VOICE_APP_KEY")
SINCH_VOICE_APP_SECRET = env_str("SINCH_VOICE_APP_SECRET")
if bool(SINCH_VOICE_APP_KEY) != bool(SINCH_VOICE_APP_SECRET):
    raise ImproperlyConfigured(
        "SINCH_VOICE_APP_KEY and SINCH_VOICE_APP_SECRET must be set together"
    )
if SINCH_VOICE_APP_SECRET:
    try:
        base64.b64decode(SINCH_VOICE_APP_SECRET, validate=True)
    except ValueError as exc:
        raise ImproperlyConfigured(
            "SINCH_VOICE_APP_SECRET must be the application secret as Sinch shows it (base64)"
        ) from exc
# Where an incoming call goes once identified: a PSTN number (connectPstn), or
# unset to park the caller on hold while the contact center picks it up.
SINCH_VOICE_CONNECT_NUMBER = env_str("SINCH_VOICE_CONNECT_NUMBER")
if SINCH_VOICE_CONNECT_NUMBER and not SINCH_VOICE_CONNECT_NUMBER.startswith("+"):
    raise ImproperlyConfigured("SINCH_VOICE_CONNECT_NUMBER must be in E.164 (+…)")
SINCH_VOICE_HOLD_PROMPT = env_str(
    "SINCH_VOICE_HOLD_PROMPT", "#tts[Thank you for calling. An agent will be with you shortly.]"
)

CRM_WEBHOOK_URL = _url_setting("CRM_WEBHOOK_URL")
CRM_WEBHOOK_SECRET = env_str("CRM_WEBHOOK_SECRET")
if CRM_WEBHOOK_URL and not CRM_WEBHOOK_SECRET:
    raise ImproperlyConfigured("CRM_WEBHOOK_URL is set but CRM_WEBHOOK_SECRET is empty")
CRM_SCREENPOP_URL = env_str("CRM_SCREENPOP_URL")
if CRM_SCREENPOP_URL:
    if "{value}" not in CRM_SCREENPOP_URL:
        raise ImproperlyConfigured(
            "CRM_SCREENPOP_URL must contain {value} (and may contain {kind})"
        )
    # The console puts it in a link's href: only http(s), or it could run script.
    _sample = CRM_SCREENPOP_URL.replace("{kind}", "email").replace("{value}", "a%40b.example")
    try:
        URLValidator(schemes=["http", "https"])(_sample)
    except ValidationError as exc:
        raise ImproperlyConfigured(
            f"CRM_SCREENPOP_URL must be an http(s) URL template (got {CRM_SCREENPOP_URL!r})"
        ) from exc
CRM_ORIGIN = _origin_setting("CRM_ORIGIN")
# A console framed by a CRM on another site only gets its session cookie with
# SameSite=None (which browsers accept only on HTTPS cookies).
CP_COOKIE_SAMESITE = env_choice("CP_COOKIE_SAMESITE", ["Lax", "Strict", "None"], "Lax")
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = CP_COOKIE_SAMESITE
if CP_COOKIE_SAMESITE == "None":
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
# The outbox worker (crm/worker.py): "inprocess" runs it in every daphne
# process (make run just works); "external" leaves it to `manage.py crm_deliver`.
CRM_DELIVERY_WORKER = env_choice("CRM_DELIVERY_WORKER", ["inprocess", "external"], "inprocess")
CRM_WEBHOOK_TIMEOUT = env_number("CRM_WEBHOOK_TIMEOUT", 10, minimum=0.1)
CRM_RETRY_BASE_SECONDS = env_number("CRM_RETRY_BASE_SECONDS", 2, minimum=0.01)
CRM_RETRY_MAX_SECONDS = env_number("CRM_RETRY_MAX_SECONDS", 300, minimum=0.01)
CRM_POLL_SECONDS = env_number("CRM_POLL_SECONDS", 1, minimum=0.01)
CRM_DELIVERED_KEEP_DAYS = env_int("CRM_DELIVERED_KEEP_DAYS", 7, minimum=1)
# How the CRM spells an app-scoped chat id, per Conversation API channel.
# ``{id}`` is replaced by the channel identity. Channels not listed pass the
# id through unchanged.
CRM_CHAT_ID_FORMATS = env_mapping(
    "CRM_CHAT_ID_FORMATS",
    {"MESSENGER": "{id}@facebook.com", "INSTAGRAM": "{id}@instagram.com"},
)
for _channel, _template in CRM_CHAT_ID_FORMATS.items():
    if "{id}" not in _template:
        raise ImproperlyConfigured(f"CRM_CHAT_ID_FORMATS entry {_channel} must contain {{id}}")

EMAIL_INBOUND_TOKEN = env_str("EMAIL_INBOUND_TOKEN")
EMAIL_INBOUND_MAX_BYTES = env_int("EMAIL_INBOUND_MAX_BYTES", 10_485_760, minimum=1024)

# --- Directory import (SPEC §6) -------------------------------------------------

# A CSV uploaded in admin is validated inside the request: larger directories
# go through `manage.py import_directory`, which has its own, larger cap.
CP_IMPORT_UPLOAD_MAX_BYTES = env_int("CP_IMPORT_UPLOAD_MAX_BYTES", 52_428_800, minimum=1024)
CP_IMPORT_FILE_MAX_BYTES = env_int("CP_IMPORT_FILE_MAX_BYTES", 4_294_967_296, minimum=1024)
