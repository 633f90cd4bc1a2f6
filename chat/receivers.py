"""Every signal receiver of cpweb, in one place (CONVENTIONS).

A directory change — an admin adding, editing or deleting a contact or one of
its identifiers, a merge, an import — re-identifies the open conversations
whose identifier it touches, once the change has committed.
"""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from chat.services import conversations_reidentify
from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone
from directory.signals import directory_changed

IDENTIFIER_MODELS = (ContactEmail, ContactPhone, ContactChatId)


def _touch(values: set[str] | None) -> None:
    transaction.on_commit(lambda: conversations_reidentify(identifiers=values))


def _contact_values(contact: Contact) -> set[str]:
    return {
        *contact.emails.values_list("value", flat=True),
        *(str(v) for v in contact.phones.values_list("value", flat=True)),
        *contact.chat_ids.values_list("value", flat=True),
    }


@receiver(pre_save, sender=ContactEmail)
@receiver(pre_save, sender=ContactPhone)
@receiver(pre_save, sender=ContactChatId)
def _remember_old_value(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        instance._previous_value = None
        return
    previous = sender.objects.filter(pk=instance.pk).values_list("value", flat=True).first()
    instance._previous_value = None if previous is None else str(previous)


@receiver(post_save, sender=ContactEmail)
@receiver(post_save, sender=ContactPhone)
@receiver(post_save, sender=ContactChatId)
def _identifier_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    values = {str(instance.value)}
    previous = getattr(instance, "_previous_value", None)
    if previous:
        values.add(previous)
    _touch(values)


@receiver(post_delete, sender=ContactEmail)
@receiver(post_delete, sender=ContactPhone)
@receiver(post_delete, sender=ContactChatId)
def _identifier_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _touch({str(instance.value)})


@receiver(post_save, sender=Contact)
def _contact_saved(sender: Any, instance: Contact, raw: bool = False, **kwargs: Any) -> None:
    # A new name or company changes what agents see for every identifier it holds.
    if not raw:
        _touch(_contact_values(instance))


@receiver(directory_changed)
def _directory_changed(sender: Any, identifiers: set[str] | None, **kwargs: Any) -> None:
    _touch(identifiers)
