"""Admin forms: every identifier typed by an admin is normalised before it is saved."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.forms.models import BaseInlineFormSet

from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone
from directory.normalize import (
    IdentifierError,
    normalize_chat_channel,
    normalize_chat_id,
    normalize_email,
    normalize_phone,
)


def _normalised(normalize: Callable[..., str], value: str, **options: Any) -> str:
    """``normalize(value)``, with an IdentifierError shown as the field's error."""
    try:
        return normalize(value, **options)
    except IdentifierError as exc:
        raise forms.ValidationError(exc.message, code=exc.code) from exc


class ContactEmailForm(forms.ModelForm):
    class Meta:
        model = ContactEmail
        fields = ["value"]

    def clean_value(self) -> str:
        return _normalised(normalize_email, self.cleaned_data["value"])


class ContactPhoneForm(forms.ModelForm):
    # A plain text field: the number is read in the contact's own country,
    # which the model field's form field cannot know.
    value = forms.CharField(
        label="Phone number",
        max_length=64,
        help_text="Any format: +44 20 7946 0958, 0044…, or national in the contact's country.",
    )

    class Meta:
        model = ContactPhone
        fields = ["value"]

    def __init__(self, *args: Any, contact: Contact | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contact = contact

    def clean_value(self) -> str:
        country = (self.contact.country if self.contact else "").upper()
        return _normalised(
            normalize_phone,
            self.cleaned_data["value"],
            region=country or settings.CP_DEFAULT_REGION,
        )


class ContactPhoneFormSet(BaseInlineFormSet):
    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        return {**super().get_form_kwargs(index), "contact": self.instance}


class ContactChatIdForm(forms.ModelForm):
    class Meta:
        model = ContactChatId
        fields = ["channel", "value"]

    def clean_channel(self) -> str:
        return _normalised(normalize_chat_channel, self.cleaned_data["channel"])

    def clean_value(self) -> str:
        return _normalised(normalize_chat_id, self.cleaned_data["value"])


class DirectoryImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8, header row external_id,name,company,country,emails,phones,chat_ids.",
    )
    update = forms.BooleanField(
        required=False,
        label="Replace contacts whose external_id is already in the directory",
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.CP_IMPORT_UPLOAD_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; uploads are limited to {limit:,} bytes "
                "(CP_IMPORT_UPLOAD_MAX_BYTES). Import larger directories with "
                "`manage.py import_directory`."
            )
        return upload


class _ContactChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        details = [f"#{obj.pk}", obj.company, obj.country, obj.external_id]
        return f"{obj.name} ({', '.join(d for d in details if d)})"


class MergeForm(forms.Form):
    keep = _ContactChoiceField(
        queryset=Contact.objects.none(), widget=forms.RadioSelect, label="Keep this contact"
    )

    def __init__(self, *args: Any, contacts: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["keep"].queryset = contacts  # type: ignore[attr-defined]
