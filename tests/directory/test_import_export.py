"""CSV import and export (SPEC §6), in admin and from the command line."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from directory.models import Contact, ContactChatId, ContactEmail, ContactPhone

IMPORT = reverse("admin:directory_contact_import")
EXPORT = reverse("admin:directory_contact_export")
HEADER = "external_id,name,company,country,emails,phones,chat_ids\n"

GOOD = HEADER + (
    "CRM-1,Anna Svensson,Nordic Bikes AB,SE,Anna@NordicBikes.se;anna@home.se,070-123 45 67,"
    "MESSENGER:2742085512340733\n"
    'CRM-2,"Hughes, Oliver",,gb,oliver@hughes.co.uk,"020 7946 0958;+44 20 7946 0123",\n'
    ",Walk-in Customer,,,,+1 202-555-0143,TELEGRAM:520012345;LINE:U4af49\n"
)

# Row numbers as a spreadsheet shows them: the header is row 1.
BAD = HEADER + (
    "CRM-1,Anna Svensson,,SE,anna@nordicbikes.se,070-123 45 67,\n"  # row 2: fine
    "CRM-2,,,SE,nameless@example.com,,\n"  # row 3: no name
    "CRM-3,Bad Email,,SE,not-an-email,,\n"  # row 4
    "CRM-4,Bad Phone,,SE,,12345,\n"  # row 5
    "CRM-5,Bad Country,,XX,,,\n"  # row 6
    "CRM-6,Bad Chat,,,,,FAX:123\n"  # row 7
    "CRM-1,Twice,,,,,\n"  # row 8: repeats row 2's external_id
    "CRM-7,Short row\n"  # row 9
)


def _upload(content: str, name: str = "contacts.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content.encode(), content_type="text/csv")


def _directory_state():
    return (
        sorted(Contact.objects.values_list("external_id", "name", "company", "country")),
        sorted(ContactEmail.objects.values_list("contact__external_id", "value")),
        sorted(ContactPhone.objects.values_list("contact__external_id", "value")),
        sorted(ContactChatId.objects.values_list("contact__external_id", "channel", "value")),
    )


# --- Admin import -------------------------------------------------------------


def test_a_good_file_imports_every_contact_normalised(admin_client):
    response = admin_client.post(IMPORT, {"file": _upload(GOOD)}, follow=True)
    assert "3 contacts created" in response.content.decode()
    anna = Contact.objects.get(external_id="CRM-1")
    assert sorted(anna.emails.values_list("value", flat=True)) == [
        "anna@home.se",
        "anna@nordicbikes.se",
    ]
    assert [str(p.value) for p in anna.phones.all()] == ["+46701234567"]
    assert list(anna.chat_ids.values_list("channel", "value")) == [
        ("MESSENGER", "2742085512340733")
    ]
    oliver = Contact.objects.get(external_id="CRM-2")
    assert (oliver.name, oliver.country) == ("Hughes, Oliver", "GB")
    assert sorted(str(p.value) for p in oliver.phones.all()) == ["+442079460123", "+442079460958"]
    walk_in = Contact.objects.get(name="Walk-in Customer")
    assert walk_in.external_id == ""
    assert walk_in.chat_ids.count() == 2
    assert walk_in.name_key == "customer in walk"  # searchable by a platform name


def test_a_bad_file_imports_nothing_and_names_every_bad_row(admin_client, make_contact):
    make_contact("Already Here", external_id="CRM-0", emails=["here@example.com"])
    before = _directory_state()
    response = admin_client.post(IMPORT, {"file": _upload(BAD)})
    assert response.status_code == 200
    assert _directory_state() == before
    report = response.context["report"]
    assert [row for row, _ in report.errors] == [3, 4, 5, 6, 7, 8, 9]
    reasons = dict(report.errors)
    assert reasons[3] == "name is empty"
    assert "not a valid email address" in reasons[4]
    assert "not a valid phone number in SE" in reasons[5]
    assert "'XX' is not an ISO 3166 alpha-2 code" in reasons[6]
    assert "'FAX' is not a chat channel" in reasons[7]
    assert reasons[8] == "external_id 'CRM-1' repeats row 2"
    assert reasons[9] == "expected 7 columns, found 2"
    page = response.content.decode()
    assert "Nothing was imported" in page
    assert "<td>5</td>" in page


def test_a_file_with_the_wrong_header_imports_nothing(admin_client):
    response = admin_client.post(IMPORT, {"file": _upload("name,email\nAnna,a@example.com\n")})
    assert "the header must be external_id,name,company" in response.content.decode()
    assert not Contact.objects.exists()


def test_a_file_that_is_not_utf8_imports_nothing(admin_client):
    latin1 = (HEADER + ",Jürgen Müller,,DE,,,\n").encode("latin-1")
    response = admin_client.post(IMPORT, {"file": SimpleUploadedFile("x.csv", latin1)})
    assert "the file is not UTF-8 text" in response.content.decode()
    assert not Contact.objects.exists()


def test_an_external_id_already_in_the_directory_is_an_error_unless_updating(
    admin_client, make_contact
):
    make_contact(
        "Old Name", external_id="CRM-1", emails=["old@example.com"], phones=["+4681234567"]
    )
    response = admin_client.post(IMPORT, {"file": _upload(GOOD)})
    assert response.context["report"].errors == [
        (2, "external_id 'CRM-1' is already in the directory (import in update mode to replace it)")
    ]
    assert Contact.objects.count() == 1

    response = admin_client.post(IMPORT, {"file": _upload(GOOD), "update": "on"}, follow=True)
    assert "2 contacts created, 1 updated" in response.content.decode()
    anna = Contact.objects.get(external_id="CRM-1")
    assert anna.name == "Anna Svensson"
    assert "old@example.com" not in anna.emails.values_list("value", flat=True)
    assert ContactEmail.objects.filter(value="old@example.com").count() == 0


# --- Export -------------------------------------------------------------------


def _export(admin_client) -> str:
    response = admin_client.get(EXPORT)
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode("utf-8-sig")


def test_export_writes_the_import_format_and_imports_back_unchanged(admin_client):
    admin_client.post(IMPORT, {"file": _upload(GOOD)})
    exported = _export(admin_client)
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == HEADER.strip().split(",")
    anna = next(row for row in rows if row[0] == "CRM-1")
    assert anna[4:] == [
        "anna@nordicbikes.se;anna@home.se",
        "'+46701234567",
        "MESSENGER:2742085512340733",
    ]
    before = _directory_state()
    Contact.objects.all().delete()
    admin_client.post(IMPORT, {"file": _upload(exported)})
    assert _directory_state() == before


def test_export_neutralises_spreadsheet_formulas_and_keeps_the_text(admin_client, make_contact):
    make_contact(
        '=HYPERLINK("http://evil.example","click")',
        company="+cmd|' /C calc'!A0",
        external_id="@SUM(1+1)",
        emails=["=danger@example.com"],
    )
    make_contact("'=already quoted", company="-2+3")
    exported = _export(admin_client)
    cells = [cell for row in csv.reader(io.StringIO(exported)) for cell in row]
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    before = _directory_state()
    Contact.objects.all().delete()
    admin_client.post(IMPORT, {"file": _upload(exported)})
    assert _directory_state() == before


def test_the_export_action_exports_only_the_selected_contacts(admin_client, make_contact):
    wanted = make_contact("Wanted", emails=["wanted@example.com"])
    make_contact("Unwanted", emails=["unwanted@example.com"])
    response = admin_client.post(
        reverse("admin:directory_contact_changelist"),
        {"action": "export_selected", "_selected_action": [wanted.pk]},
    )
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    assert "wanted@example.com" in body
    assert "unwanted@example.com" not in body


# --- Command line -------------------------------------------------------------


def _write(tmp_path, content: str):
    path = tmp_path / "directory.csv"
    path.write_text(content, encoding="utf-8")
    return path


def test_import_directory_loads_a_file_with_a_progress_bar(tmp_path, db):
    out, err = io.StringIO(), io.StringIO()
    call_command("import_directory", str(_write(tmp_path, GOOD)), stdout=out, stderr=err)
    assert "3 contacts created" in out.getvalue()
    assert "importing" in err.getvalue()  # the progress bar
    assert Contact.objects.count() == 3


def test_import_directory_refuses_a_bad_file_and_imports_nothing(tmp_path, db):
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing imported: 7 of 8 rows have problems"):
        call_command("import_directory", str(_write(tmp_path, BAD)), stderr=err, stdout=err)
    assert "row 5: '12345' is not a valid phone number in SE" in err.getvalue()
    assert not Contact.objects.exists()


def test_import_directory_names_a_missing_file(db):
    with pytest.raises(CommandError, match=r"cannot read /nonexistent\.csv"):
        call_command("import_directory", "/nonexistent.csv")


def _generated(rows: int, *, bad_row: int | None = None) -> str:
    lines = [HEADER]
    for n in range(rows):
        email = "broken" if n == bad_row else f"person{n}@example.com"
        lines.append(f"EXT-{n},Person {n},,SE,{email},+46 70 {n:07d},\n")
    return "".join(lines)


def test_a_bad_row_in_a_late_batch_rolls_back_the_batches_already_written(tmp_path, db):
    path = _write(tmp_path, _generated(2_500, bad_row=2_400))
    with pytest.raises(CommandError, match="1 of 2500 rows"):
        call_command("import_directory", str(path), "--batch-size", "500", "--no-progress")
    assert not Contact.objects.exists()
    assert not ContactEmail.objects.exists()


def test_import_directory_update_mode_replaces_by_external_id(tmp_path, db):
    call_command("import_directory", str(_write(tmp_path, _generated(1_200))), "--no-progress",
                 "--batch-size", "500")  # fmt: skip
    changed = HEADER + "EXT-7,Person Seven,Acme,SE,seven@example.com,,\nEXT-NEW,New Person,,,,,\n"
    out = io.StringIO()
    call_command("import_directory", str(_write(tmp_path, changed)), "--update", "--no-progress",
                 stdout=out)  # fmt: skip
    assert "1 contacts created, 1 updated" in out.getvalue()
    seven = Contact.objects.get(external_id="EXT-7")
    assert (seven.name, seven.company) == ("Person Seven", "Acme")
    assert list(seven.emails.values_list("value", flat=True)) == ["seven@example.com"]
    assert not seven.phones.exists()
    assert Contact.objects.count() == 1_201


# --- Size limits ----------------------------------------------------------------------


def test_an_upload_over_the_size_limit_is_refused_and_nothing_imported(
    admin_client, make_contact, settings
):
    make_contact("Already Here", emails=["here@example.com"])
    settings.CP_IMPORT_UPLOAD_MAX_BYTES = len(GOOD.encode()) - 1
    response = admin_client.post(IMPORT, {"file": _upload(GOOD)})
    assert response.status_code == 200
    page = response.content.decode()
    assert "uploads are limited to" in page
    assert "manage.py import_directory" in page
    assert list(Contact.objects.values_list("name", flat=True)) == ["Already Here"]

    settings.CP_IMPORT_UPLOAD_MAX_BYTES = len(GOOD.encode())
    response = admin_client.post(IMPORT, {"file": _upload(GOOD)}, follow=True)
    assert "3 contacts created" in response.content.decode()


def test_import_directory_refuses_a_file_over_the_size_limit(tmp_path, db, settings):
    path = _write(tmp_path, GOOD)
    settings.CP_IMPORT_FILE_MAX_BYTES = path.stat().st_size - 1
    with pytest.raises(CommandError, match=r"over the limit .*CP_IMPORT_FILE_MAX_BYTES"):
        call_command("import_directory", str(path), "--no-progress")
    assert not Contact.objects.exists()


def test_a_cell_too_long_for_the_csv_reader_is_a_row_error(admin_client):
    huge = HEADER + "CRM-1,Anna,,SE," + "a" * 200_000 + "@example.com,,\n"
    response = admin_client.post(IMPORT, {"file": _upload(huge)})
    assert response.status_code == 200
    assert "the CSV is malformed" in response.content.decode()
    assert not Contact.objects.exists()
