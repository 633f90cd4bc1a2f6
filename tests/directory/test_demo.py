"""``manage.py demo_setup``: what a newcomer gets from the README's first command."""

import io

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db.models import Count

from directory.identify import identify
from directory.models import Contact, ContactEmail, ContactPhone


def test_the_demo_directory_shows_every_kind_of_result(db):
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    assert Contact.objects.count() >= 30
    assert Contact.objects.values("country").distinct().count() >= 10
    shared_phones = ContactPhone.objects.values("value").annotate(n=Count("id")).filter(n__gt=1)
    shared_emails = ContactEmail.objects.values("value").annotate(n=Count("id")).filter(n__gt=1)
    assert shared_phones.count() >= 1
    assert shared_emails.count() >= 1
    assert identify(channel="voice", identifier="46812345678")["status"] == "ambiguous"
    assert identify(channel="webchat", identifier="support@nordicbikes.se")["status"] == (
        "ambiguous"
    )
    assert identify(channel="WHATSAPP", identifier="46701234567")["status"] == "matched"


def test_the_demo_users_can_log_in_with_the_printed_credentials(client, db):
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    printed = out.getvalue()
    assert "user 'admin'  password 'cpweb-admin-demo'" in printed
    assert "user 'agent'  password 'cpweb-agent-demo'" in printed
    assert client.login(username="admin", password="cpweb-admin-demo")
    assert client.login(username="agent", password="cpweb-agent-demo")
    agent = User.objects.get(username="agent")
    assert agent.has_perm("chat.view_conversation")
    assert not agent.is_superuser


def test_running_the_demo_setup_twice_changes_nothing(db):
    call_command("demo_setup", stdout=io.StringIO())
    before = Contact.objects.count()
    call_command("demo_setup", stdout=io.StringIO())
    assert Contact.objects.count() == before
    assert User.objects.count() == 2
