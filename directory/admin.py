"""Django admin for the directory: identifiers inline, search by any identifier,
the shared-identifier filter and report, merge, CSV import and export."""

import csv
import io
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from directory import selectors, services
from directory.csv_format import HEADER, format_row
from directory.forms import (
    ContactChatIdForm,
    ContactEmailForm,
    ContactPhoneForm,
    ContactPhoneFormSet,
    DirectoryImportForm,
    MergeForm,
)
from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ["name", "company", "country", "external_id"]

    def clean_country(self) -> str:
        return self.cleaned_data["country"].strip().upper()


class EmailInline(admin.TabularInline):
    model = ContactEmail
    form = ContactEmailForm
    extra = 1


class PhoneInline(admin.TabularInline):
    model = ContactPhone
    form = ContactPhoneForm
    formset = ContactPhoneFormSet
    extra = 1


class ChatIdInline(admin.TabularInline):
    model = ContactChatId
    form = ContactChatIdForm
    extra = 0

    def get_extra(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> int:
        return 1 if request.method == "GET" and request.GET.get("chat_id") else self.extra


def _prefilled_identifier(request: HttpRequest, inline: Any) -> list[dict[str, str]]:
    """``?email=``, ``?phone=`` or ``?chat_channel=&chat_id=`` from the console's
    "add to directory" link, as the initial row of the matching inline."""
    if request.method != "GET":
        return []
    if isinstance(inline, EmailInline) and request.GET.get("email"):
        return [{"value": request.GET["email"]}]
    if isinstance(inline, PhoneInline) and request.GET.get("phone"):
        return [{"value": request.GET["phone"]}]
    if isinstance(inline, ChatIdInline) and request.GET.get("chat_id"):
        return [{"channel": request.GET.get("chat_channel", ""), "value": request.GET["chat_id"]}]
    return []


class SharedIdentifierFilter(admin.SimpleListFilter):
    title = "shared identifiers"
    parameter_name = "shared"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Shares an identifier with another contact")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        if self.value() == "yes":
            return queryset.filter(pk__in=selectors.contacts_sharing_identifiers().values("pk"))
        return queryset


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_response(contacts: QuerySet[Contact] | None, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def rows() -> Iterator[str]:
        yield "\ufeff"  # lets spreadsheets open the UTF-8 file as UTF-8
        yield writer.writerow(HEADER)
        for row in selectors.contacts_for_export(contacts):
            yield writer.writerow(
                format_row(
                    external_id=row.external_id,
                    name=row.name,
                    company=row.company,
                    country=row.country,
                    emails=row.emails,
                    phones=row.phones,
                    chat_ids=row.chat_ids,
                )
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    inlines = [EmailInline, PhoneInline, ChatIdInline]
    list_display = ["name", "company", "country", "external_id", "identifiers"]
    list_filter = [SharedIdentifierFilter, "country"]
    search_fields = ["name", "company", "external_id", "emails__value"]
    search_help_text = (
        "Name, company, external id, or any email, phone number (any format) or chat id."
    )
    actions = ["merge_contacts", "export_selected"]
    show_full_result_count = False
    list_per_page = 50

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Any, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        initial = _prefilled_identifier(request, inline) if obj.pk is None else []
        return {**kwargs, "initial": initial} if initial else kwargs

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contact]:
        return super().get_queryset(request).prefetch_related("emails", "phones", "chat_ids")

    @admin.display(description="identifiers")
    def identifiers(self, contact: Contact) -> str:
        values = [
            *(e.value for e in contact.emails.all()),
            *(str(p.value) for p in contact.phones.all()),
            *(str(c) for c in contact.chat_ids.all()),
        ]
        return ", ".join(values)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Contact], search_term: str
    ) -> tuple[QuerySet[Contact], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        ids = selectors.contact_ids_for_search(search_term)
        if ids:
            results = results | queryset.filter(pk__in=ids)
        return results, may_have_duplicates

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="directory_contact_import",
            ),
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="directory_contact_export",
            ),
            path(
                "shared/",
                self.admin_site.admin_view(self.shared_view),
                name="directory_contact_shared",
            ),
        ]
        return own + super().get_urls()

    # --- Actions -------------------------------------------------------------

    @admin.action(description="Merge selected contacts into one", permissions=["delete"])
    def merge_contacts(
        self, request: HttpRequest, queryset: QuerySet[Contact]
    ) -> HttpResponse | None:
        contacts = queryset.order_by("name", "id")
        if contacts.count() < 2:
            self.message_user(request, "Select at least two contacts to merge.", messages.WARNING)
            return None
        form = MergeForm(request.POST if "confirm" in request.POST else None, contacts=contacts)
        if form.is_valid():
            keep = form.cleaned_data["keep"]
            others = [c for c in contacts if c.pk != keep.pk]
            services.contact_merge(keep=keep, others=others)
            names = ", ".join(f"{c.name} (#{c.pk})" for c in others)
            self.log_change(request, keep, f"Merged {names} into this contact.")
            self.log_deletions(request, others)  # type: ignore[arg-type]
            self.message_user(request, f"Merged {len(others)} contacts into {keep.name}.")
            return None
        return render(
            request,
            "admin/directory/contact/merge.html",
            {
                **self.admin_site.each_context(request),
                "title": "Merge contacts",
                "opts": self.model._meta,
                "form": form,
                "contacts": contacts,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Export selected contacts as CSV", permissions=["view"])
    def export_selected(
        self, request: HttpRequest, queryset: QuerySet[Contact]
    ) -> StreamingHttpResponse:
        return _csv_response(queryset, "contacts-selected.csv")

    # --- Views ---------------------------------------------------------------

    def export_view(self, request: HttpRequest) -> StreamingHttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        return _csv_response(None, f"contacts-{stamp}.csv")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        report = None
        form = DirectoryImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            stream = io.TextIOWrapper(upload.file, encoding="utf-8-sig", newline="")
            report = services.directory_import(stream, update=form.cleaned_data["update"])
            if report.ok:
                self.message_user(
                    request,
                    f"Imported {upload.name}: {report.created} contacts created, "
                    f"{report.updated} updated.",
                )
                return HttpResponseRedirect(reverse("admin:directory_contact_changelist"))
        return TemplateResponse(
            request,
            "admin/directory/contact/import.html",
            {
                **self.admin_site.each_context(request),
                "title": "Import contacts from CSV",
                "opts": self.model._meta,
                "form": form,
                "report": report,
                "header": ",".join(HEADER),
            },
        )

    def shared_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        shared, total = selectors.shared_identifiers()
        return TemplateResponse(
            request,
            "admin/directory/contact/shared.html",
            {
                **self.admin_site.each_context(request),
                "title": "Identifiers shared by several contacts",
                "opts": self.model._meta,
                "shared": shared,
                "total": total,
            },
        )
