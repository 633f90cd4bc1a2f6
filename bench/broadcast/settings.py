"""Just enough Django for the broadcast room: Channels and an in-memory channel layer."""

SECRET_KEY = "bench-broadcast-signs-nothing"  # noqa: S105  (no sessions, no auth, no forms)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
DATABASES: dict = {}
USE_TZ = True
ASGI_APPLICATION = "bench.broadcast.asgi.application"

# Every room member has its own channel, and each group_send puts one message on each of
# them. The default capacity (100 per channel) would silently drop messages whenever a
# member falls 100 behind; 10,000 is minutes of backlog at the benchmark's rates (tens of
# messages a second), so nothing is dropped: a frame reported lost arrived too late.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer",
        "CONFIG": {"capacity": 10_000},
    }
}
