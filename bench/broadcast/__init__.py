"""A bare Channels broadcast app: the Channels tutorial's chat room, as a load baseline.

Run from the repository root:

    DJANGO_SETTINGS_MODULE=bench.broadcast.settings \
        .venv/bin/daphne -b 127.0.0.1 -p 8001 bench.broadcast.asgi:application

``bench/webchat_load.py`` starts it itself, after cpweb, to measure what Channels' own
group fan-out costs on this machine at the same frame rate.
"""
