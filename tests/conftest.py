"""Shared fixtures, and the rule that a CI run against real services never skips.

``.ci/run`` runs the suite twice: on SQLite + the in-memory channel layer, and
with ``CI=true`` on PostgreSQL + Redis. In that second run a skipped test
would hide a broken service, so any skip is turned into a failure.
"""

import os

import pytest
from django.contrib.auth.models import Permission, User

from directory.models import Contact
from directory.services import contact_create

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ON_SERVICES = os.environ.get("DATABASE_URL", "").startswith("postgres") or bool(
    os.environ.get("REDIS_URL")
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if CI and ON_SERVICES and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true on real services: {report.longrepr}"


@pytest.fixture
def make_contact(db):  # type: ignore[no-untyped-def]
    """Create a directory contact the way an admin would, identifiers normalised."""

    def make(name: str = "Anna Svensson", **fields) -> Contact:  # type: ignore[no-untyped-def]
        return contact_create(name=name, **fields)

    return make


@pytest.fixture
def agent(db) -> User:  # type: ignore[no-untyped-def]
    """An agent: may watch conversations and look contacts up, nothing more."""
    user = User.objects.create_user("agent", password="agent-pass-123", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_conversation"),
        Permission.objects.get(codename="view_contact"),
    )
    return user


@pytest.fixture
def staff_without_permissions(db) -> User:  # type: ignore[no-untyped-def]
    """A staff user who was given no permission at all."""
    return User.objects.create_user("intern", password="intern-pass-123", is_staff=True)
