"""The contact directory (SPEC §6).

A contact has any number of emails, phone numbers and chat ids, each stored
normalised in its own indexed table so that identifying a customer is one
index lookup. An identifier may belong to several contacts (the product shows
that as an ambiguous match), but never twice to the same contact.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from phonenumber_field.modelfields import PhoneNumberField

from directory.normalize import CHAT_ID_CHANNELS, is_known_region, name_keys


def validate_country(value: str) -> None:
    if value and not is_known_region(value):
        raise ValidationError(f"{value!r} is not an ISO 3166 alpha-2 country code.")


class Contact(models.Model):
    name = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True)
    country = models.CharField(
        max_length=2,
        blank=True,
        db_index=True,
        validators=[validate_country],
        help_text="ISO 3166 alpha-2 (GB, SE, US…); national-format numbers are read in it.",
    )
    external_id = models.CharField(
        max_length=100, blank=True, help_text="The id of this contact in your own systems."
    )
    # Derived from name (directory.normalize.name_keys) to find a contact by a
    # name a messaging platform supplies.
    name_key = models.CharField(max_length=200, editable=False, db_index=True, default="")
    name_short_key = models.CharField(max_length=200, editable=False, db_index=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["external_id"],
                condition=~Q(external_id=""),
                name="contact_external_id_unique",
                violation_error_message="Another contact already has this external id.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.company})" if self.company else self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.country = self.country.upper()
        self.name_key, self.name_short_key = name_keys(self.name)
        super().save(*args, **kwargs)


class ContactEmail(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="emails")
    # Normalised by directory.normalize.normalize_email: the lookup key.
    value = models.CharField("email", max_length=320, db_index=True)

    class Meta:
        verbose_name = "email"
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "value"],
                name="contact_email_unique",
                violation_error_message="This contact already has this email.",
            )
        ]

    def __str__(self) -> str:
        return self.value


class ContactPhone(models.Model):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="phones")
    value = PhoneNumberField("phone", db_index=True)  # stored as E.164

    class Meta:
        verbose_name = "phone number"
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "value"],
                name="contact_phone_unique",
                violation_error_message="This contact already has this phone number.",
            )
        ]

    def __str__(self) -> str:
        return str(self.value)


class ContactChatId(models.Model):
    CHANNEL_CHOICES = [(channel, channel) for channel in sorted(CHAT_ID_CHANNELS)]

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="chat_ids")
    channel = models.CharField(max_length=20, choices=CHANNEL_CHOICES)
    value = models.CharField("chat id", max_length=200)

    class Meta:
        verbose_name = "chat id"
        indexes = [models.Index(fields=["channel", "value"], name="contact_chat_id_lookup")]
        constraints = [
            models.UniqueConstraint(
                fields=["contact", "channel", "value"],
                name="contact_chat_id_unique",
                violation_error_message="This contact already has this chat id.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.value}"
