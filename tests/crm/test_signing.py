"""The webhook signature a CRM checks (README, "CRM-integrated mode")."""

import hashlib
import hmac

from crm.signing import signature, signature_valid

BODY = b'{"event":"identified","crm":{"kind":"phone","value":"+46701234567"}}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex():
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(secret="s3cret", timestamp=1700000000, body=BODY) == f"sha256={expected}"


def test_a_crm_accepts_a_fresh_request_signed_with_its_secret():
    header = signature(secret="s3cret", timestamp=1700000000, body=BODY)
    assert signature_valid(
        secret="s3cret", timestamp="1700000000", body=BODY, signature_header=header,
        now=1700000100,
    )  # fmt: skip


def test_a_crm_refuses_tampering_the_wrong_secret_and_stale_or_odd_timestamps():
    header = signature(secret="s3cret", timestamp=1700000000, body=BODY)
    check = dict(secret="s3cret", timestamp="1700000000", body=BODY, signature_header=header)
    now = 1700000000
    assert not signature_valid(**check | {"body": BODY.replace(b"467", b"468")}, now=now)
    assert not signature_valid(**check | {"secret": "other"}, now=now)
    assert not signature_valid(**check | {"timestamp": "1700000001"}, now=now)
    assert not signature_valid(**check, now=now + 301)
    assert not signature_valid(**check | {"timestamp": "soon"}, now=now)
    assert not signature_valid(**check | {"signature_header": header[:-1]}, now=now)
