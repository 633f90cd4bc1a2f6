"""Limits on what one client address may do: new web chats a minute, open sockets.

The address is the socket's peer, or, when the peer is a proxy listed in
CP_TRUSTED_PROXIES, the nearest X-Forwarded-For hop that is not one of those
proxies. X-Forwarded-For from anyone else is ignored: it is only a claim.

Where the counts live:

- **new chats a minute** (CP_WEBCHAT_STARTS_PER_MINUTE) are counted in Redis
  when REDIS_URL is set, so several daphne processes behind one proxy enforce
  one limit; without Redis there is one process and they are counted in it.
  The window slides: the previous minute's count weighs by the share of it
  still inside the last 60 s, so a burst at a minute's boundary cannot double
  the rate.
- **open sockets** (CP_WS_MAX_SOCKETS_PER_ADDRESS) are counted per process: a
  count kept in Redis would leak whenever a process died with sockets open. It
  guards each process's own file descriptors and memory; a deployment of N
  processes lets an address hold up to N times the limit in all (the proxy's
  own per-address connection limit, e.g. nginx ``limit_conn``, caps the total).
"""

import asyncio
import ipaddress
import time
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

import redis
from django.conf import settings

UNKNOWN_ADDRESS = "unknown"
WINDOW_SECONDS = 60

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """``10.0.0.1``, ``10.0.0.0/8``, ``::1``: ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return networks


def _in(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: dict[str, Any]) -> str:
    """The address a socket's limits are counted against."""
    client = scope.get("client") or (None,)
    peer = str(client[0] or "")
    trusted: list[Network] = settings.CP_TRUSTED_PROXIES
    if not peer:
        return UNKNOWN_ADDRESS
    if not _in(peer, trusted):
        return peer
    forwarded = ",".join(
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name.lower() == b"x-forwarded-for"
    )
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    # Each proxy appends the address it saw: walk back from the nearest hop
    # while it is one of ours; the first one that is not is the client.
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


# --- New chats a minute ----------------------------------------------------------


def _window(now: float) -> tuple[int, float]:
    """The current window's number, and the share of the previous one still counting."""
    return int(now // WINDOW_SECONDS), 1 - (now % WINDOW_SECONDS) / WINDOW_SECONDS


_local_counts: dict[tuple[str, int], int] = {}


def _count_locally(address: str, now: float) -> float:
    window, previous_weight = _window(now)
    if any(key[1] < window - 1 for key in _local_counts):
        for key in [key for key in _local_counts if key[1] < window - 1]:
            del _local_counts[key]
    _local_counts[(address, window)] = _local_counts.get((address, window), 0) + 1
    return _local_counts[(address, window)] + previous_weight * _local_counts.get(
        (address, window - 1), 0
    )


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def _key_prefix() -> str:
    return f"{settings.CP_CHANNEL_PREFIX}:limits:starts:"


def _count_in_redis(address: str, now: float) -> float:
    window, previous_weight = _window(now)
    key = f"{_key_prefix()}{address}:"
    pipe = _redis().pipeline()
    pipe.incr(f"{key}{window}")
    pipe.expire(f"{key}{window}", 2 * WINDOW_SECONDS)
    pipe.get(f"{key}{window - 1}")
    current, _, previous = pipe.execute()
    return int(current) + previous_weight * int(previous or 0)


async def webchat_start_allowed(address: str) -> bool:
    """Count a new chat from ``address``; False once it is over the limit."""
    limit = settings.CP_WEBCHAT_STARTS_PER_MINUTE
    if not limit:
        return True
    now = time.time()
    if settings.REDIS_URL:
        try:
            count = await asyncio.to_thread(_count_in_redis, address, now)
        except redis.RedisError:
            # Redis down: the channel layer is down too and pushes fail
            # anyway; count in this process rather than refuse every visitor.
            count = _count_locally(address, now)
    else:
        count = _count_locally(address, now)
    return count <= limit


# --- Open sockets ------------------------------------------------------------------

_open_sockets: Counter[str] = Counter()


def socket_open(address: str) -> bool:
    """Take one of ``address``'s sockets; False (and nothing taken) if it has them all."""
    limit = settings.CP_WS_MAX_SOCKETS_PER_ADDRESS
    if limit and _open_sockets[address] >= limit:
        return False
    _open_sockets[address] += 1
    return True


def socket_closed(address: str) -> None:
    _open_sockets[address] -= 1
    if _open_sockets[address] <= 0:
        del _open_sockets[address]


def reset() -> None:
    """Forget every count (tests start from zero)."""
    _local_counts.clear()
    _open_sockets.clear()
    if settings.REDIS_URL:
        client = _redis()
        keys = list(client.scan_iter(match=f"{_key_prefix()}*", count=1000))
        if keys:
            client.delete(*keys)
