"""The demo directory loaded by ``manage.py demo_setup``.

A few dozen contacts across a dozen countries, with phone numbers in the
formats people type (national numbers read in the contact's country), chat
ids, two contacts sharing a landline and two sharing a mailbox, so every
identification result can be tried on a fresh install.
"""

from typing import TypedDict


class DemoContact(TypedDict, total=False):
    external_id: str
    name: str
    company: str
    country: str
    emails: list[str]
    phones: list[str]
    chat_ids: list[tuple[str, str]]


DEMO_CONTACTS: list[DemoContact] = [
    # Sweden: the WhatsApp and voice examples of ../shared/examples come from +46701234567.
    {"external_id": "CRM-1001", "name": "Anna Maria Svensson", "company": "Nordic Bikes AB",
     "country": "SE", "emails": ["anna.svensson@nordicbikes.se"], "phones": ["070-123 45 67"]},
    # Two people sharing a household landline: calls from it are ambiguous.
    {"external_id": "CRM-1002", "name": "Erik Lindqvist", "country": "SE",
     "emails": ["erik.lindqvist@example.se"], "phones": ["08-123 456 78"]},
    {"external_id": "CRM-1003", "name": "Karin Lindqvist", "country": "SE",
     "emails": ["karin.lindqvist@example.se"], "phones": ["+46 8 123 456 78"]},
    # Two colleagues sharing a team mailbox: chats from it are ambiguous.
    {"external_id": "CRM-1004", "name": "Lars Berg", "company": "Nordic Bikes AB", "country": "SE",
     "emails": ["lars.berg@nordicbikes.se", "support@nordicbikes.se"]},
    {"external_id": "CRM-1005", "name": "Sofia Ek", "company": "Nordic Bikes AB", "country": "SE",
     "emails": ["sofia.ek@nordicbikes.se", "Support@NordicBikes.se"]},
    # United Kingdom (Ofcom's drama ranges).
    {"external_id": "CRM-2001", "name": "Oliver Hughes", "company": "Hughes & Daughters Ltd",
     "country": "GB", "emails": ["oliver@hughes-daughters.co.uk"], "phones": ["020 7946 0958"]},
    {"external_id": "CRM-2002", "name": "Amelia Clarke", "country": "GB",
     "emails": ["amelia.clarke@example.co.uk"], "phones": ["020 7946 0123"],
     "chat_ids": [("MESSENGER", "2742085512340733")]},
    {"external_id": "CRM-2003", "name": "Siobhán O'Connor", "company": "Greenway Travel",
     "country": "IE", "emails": ["siobhan@greenway.ie"], "phones": ["087 123 4567"]},
    # United States and Canada.
    {"external_id": "CRM-3001", "name": "James Carter", "company": "Carter Logistics",
     "country": "US", "emails": ["jcarter@carterlogistics.com"], "phones": ["(202) 555-0143"]},
    {"external_id": "CRM-3002", "name": "Maria Garcia", "country": "US",
     "emails": ["maria.garcia@example.com"], "phones": ["312-555-0178"],
     "chat_ids": [("INSTAGRAM", "17841400000000001")]},
    {"external_id": "CRM-3003", "name": "Chloé Tremblay", "company": "Érable Design",
     "country": "CA", "emails": ["chloe@erable-design.ca"], "phones": ["416 555 0123"]},
    {"external_id": "CRM-3004", "name": "Liam Roy", "country": "CA",
     "emails": ["liam.roy@example.ca"], "phones": ["613-555-0199"]},
    # Germany, France, Spain, Italy, the Netherlands, Switzerland.
    {"external_id": "CRM-4001", "name": "Jürgen Müller", "company": "Müller Maschinenbau GmbH",
     "country": "DE", "emails": ["j.mueller@mueller-mb.de", "jürgen@müller.example"],
     "phones": ["030 12345678", "0151 23456789"]},
    {"external_id": "CRM-4002", "name": "Claire Dubois", "company": "Atelier Dubois",
     "country": "FR", "emails": ["claire@atelier-dubois.fr"], "phones": ["01 23 45 67 89"]},
    {"external_id": "CRM-4003", "name": "Hugo Lefèvre", "country": "FR",
     "emails": ["hugo.lefevre@example.fr"], "phones": ["06 12 34 56 78"],
     "chat_ids": [("TELEGRAM", "520012345")]},
    {"external_id": "CRM-4004", "name": "Lucía Fernández García", "company": "Olivos del Sur",
     "country": "ES", "emails": ["lucia@olivosdelsur.es"], "phones": ["612 345 678"]},
    {"external_id": "CRM-4005", "name": "Giulia Rossi", "company": "Rossi Moda",
     "country": "IT", "emails": ["giulia@rossimoda.it"], "phones": ["06 1234 5678"]},
    {"external_id": "CRM-4006", "name": "Marco Bianchi", "country": "IT",
     "emails": ["marco.bianchi@example.it"], "phones": ["312 345 6789"],
     "chat_ids": [("VIBER", "k7P9xQ2mZ4vB1nC8")]},
    {"external_id": "CRM-4007", "name": "Daan de Vries", "company": "Tulip Freight BV",
     "country": "NL", "emails": ["daan@tulipfreight.nl"], "phones": ["020 123 4567"]},
    {"external_id": "CRM-4008", "name": "Sanne Jansen", "country": "NL",
     "emails": ["sanne.jansen@example.nl"], "phones": ["06 12345678"]},
    {"external_id": "CRM-4009", "name": "Noah Keller", "company": "Keller Uhren AG",
     "country": "CH", "emails": ["noah@keller-uhren.ch"], "phones": ["044 668 18 00"]},
    # The Nordics beyond Sweden, and Poland.
    {"external_id": "CRM-5001", "name": "Ingrid Haugen", "country": "NO",
     "emails": ["ingrid.haugen@example.no"], "phones": ["412 34 567"]},
    {"external_id": "CRM-5002", "name": "Mikkel Sørensen", "company": "Fjord Foods ApS",
     "country": "DK", "emails": ["mikkel@fjordfoods.dk"], "phones": ["40 12 34 56"]},
    {"external_id": "CRM-5003", "name": "Aino Virtanen", "country": "FI",
     "emails": ["aino.virtanen@example.fi"], "phones": ["040 1234567"],
     "chat_ids": [("LINE", "U4af4980629aaaa0000000000000001")]},
    {"external_id": "CRM-5004", "name": "Katarzyna Nowak", "company": "Nowak Sp. z o.o.",
     "country": "PL", "emails": ["k.nowak@nowak.pl"], "phones": ["512 345 678", "12 345 67 89"]},
    # Further afield.
    {"external_id": "CRM-6001", "name": "Rafael Souza", "company": "Souza Café",
     "country": "BR", "emails": ["rafael@souzacafe.com.br"], "phones": ["(11) 91234-5678"]},
    {"external_id": "CRM-6002", "name": "Priya Sharma", "company": "Sharma Textiles",
     "country": "IN", "emails": ["priya@sharmatextiles.in"], "phones": ["098765 43210"]},
    {"external_id": "CRM-6003", "name": "Haruto Sato", "company": "Sato Denki KK",
     "country": "JP", "emails": ["h.sato@satodenki.jp"], "phones": ["03-1234-5678"]},
    {"external_id": "CRM-6004", "name": "Yui Tanaka", "country": "JP",
     "emails": ["yui.tanaka@example.jp"], "phones": ["090-1234-5678"],
     "chat_ids": [("LINE", "U4af4980629bbbb0000000000000002")]},
    {"external_id": "CRM-6005", "name": "Jack Wilson", "company": "Harbour Surf Co",
     "country": "AU", "emails": ["jack@harboursurf.com.au"], "phones": ["(02) 9876 5432"]},
    {"external_id": "CRM-6006", "name": "Olivia Brown", "country": "AU",
     "emails": ["olivia.brown@example.com.au"], "phones": ["0412 345 678"]},
    {"external_id": "CRM-6007", "name": "Alejandro Hernández", "company": "Hernández Imports",
     "country": "MX", "emails": ["alejandro@hernandez-imports.mx"], "phones": ["55 1234 5678"]},
    {"external_id": "CRM-6008", "name": "Thabo Nkosi", "company": "Cape Solar",
     "country": "ZA", "emails": ["thabo@capesolar.co.za"], "phones": ["021 123 4567"]},
    # A Sinch Chat visitor known by the id the Sinch widget gave them.
    {"external_id": "CRM-7001", "name": "Elena Popescu", "country": "RO",
     "emails": ["elena.popescu@example.ro"], "chat_ids": [("SINCH_CHAT", "sc-8f14e45fceea167a")]},
]  # fmt: skip
