"""Typed readers for configuration from environment variables.

Each reader fails at start-up with an ``ImproperlyConfigured`` error that names
the variable, so a typo in a deployment is caught before the first request.
"""

import os
from collections.abc import Iterable

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (got {value!r})")


def env_number(name: str, default: float, *, minimum: float = 0) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number (got {value!r})") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum} (got {value!r})")
    return number


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    number = env_number(name, default, minimum=minimum)
    if number != int(number):
        raise ImproperlyConfigured(f"{name} must be a whole number (got {number!r})")
    return int(number)


def env_list(name: str, default: Iterable[str] = ()) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, choices: Iterable[str], default: str) -> str:
    allowed = list(choices)
    value = env_str(name, default)
    if value not in allowed:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def env_mapping(name: str, default: dict[str, str]) -> dict[str, str]:
    """``KEY=value,KEY2=value2`` into a dict merged over ``default``."""
    result = dict(default)
    for item in env_list(name):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name} entries must look like KEY=value (got {item!r})")
        result[key.strip()] = value.strip()
    return result
