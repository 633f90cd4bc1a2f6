"""``python manage.py demo_setup``: the demo directory, a demo admin and a demo agent.

Safe to run again: contacts already present (by external_id) are left alone
and the demo users' passwords are reset to the printed ones.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from directory.demo import DEMO_CONTACTS
from directory.models import Contact
from directory.services import contact_create

DEMO_ADMIN = ("admin", "cpweb-admin-demo")
DEMO_AGENT = ("agent", "cpweb-agent-demo")
AGENT_PERMISSIONS = [
    ("chat", "view_conversation"),
    ("directory", "view_contact"),
    ("directory", "add_contact"),
    ("directory", "change_contact"),
    *[
        ("directory", f"{action}_{model}")
        for model in ("contactemail", "contactphone", "contactchatid")
        for action in ("view", "add", "change", "delete")
    ],
]


class Command(BaseCommand):
    help = "Load the demo directory and create the demo admin and agent (prints credentials)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            created = 0
            existing = set(Contact.objects.values_list("external_id", flat=True))
            for demo in DEMO_CONTACTS:
                if demo["external_id"] not in existing:
                    contact_create(**demo)
                    created += 1
            agents = self._agents_group()
            admin = self._user(DEMO_ADMIN, superuser=True)
            agent = self._user(DEMO_AGENT, superuser=False)
            agent.groups.add(agents)

        base = options["base_url"].rstrip("/")
        total = Contact.objects.count()
        self.stdout.write(
            f"\nDemo directory: {created} contacts added, {total} in the directory.\n\n"
            f"  Demo site (web chat):  {base}/\n"
            f"  Agent console:         {base}/console/\n"
            f"  Admin (directory):     {base}/admin/\n"
            f"  Identify API:          POST {base}/api/identify\n"
            f"  Insights (admin):      {base}/admin/insights/\n"
            f"  Health, metrics:       {base}/healthz  {base}/metrics\n\n"
            f"  Admin:  user {admin.username!r}  password {DEMO_ADMIN[1]!r}\n"
            f"  Agent:  user {agent.username!r}  password {DEMO_AGENT[1]!r}\n"
            f"  API:    Authorization: Bearer {settings.CP_API_TOKEN or '(set CP_API_TOKEN)'}\n"
            f"  Metrics: Authorization: Bearer "
            f"{settings.CP_METRICS_TOKEN or '(set CP_METRICS_TOKEN)'}\n\n"
            "These are demo credentials for a server on 127.0.0.1 only.\n"
        )

    def _agents_group(self) -> Group:
        group, _ = Group.objects.get_or_create(name="Agents")
        for app_label, codename in AGENT_PERMISSIONS:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return group

    def _user(self, credentials: tuple[str, str], *, superuser: bool) -> User:
        username, password = credentials
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = superuser
        user.set_password(password)
        user.save()
        return user
