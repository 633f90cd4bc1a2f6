"""Bad configuration stops start-up with a message naming the variable (SPEC §7)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean | {"CPWEB_VAR_DIR": str(tmp_path)} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CP_MODE": "crm-ish"}, "CP_MODE"),
        ({"CP_DEFAULT_REGION": "XX"}, "CP_DEFAULT_REGION"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DATABASE_URL": "mysql://root@localhost/cpweb"}, "DATABASE_URL"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"WEBCHAT_REQUIRE_VERIFIED": "true"}, "WEBCHAT_IDENTITY_SECRET"),
        ({"CRM_WEBHOOK_URL": "https://crm.example/hook"}, "CRM_WEBHOOK_SECRET"),
        ({"CRM_WEBHOOK_URL": "not a url", "CRM_WEBHOOK_SECRET": "x"}, "CRM_WEBHOOK_URL"),
        ({"SINCH_API_BASE_URL": "ftp://sinch"}, "SINCH_API_BASE_URL"),
        ({"CRM_SCREENPOP_URL": "https://crm.example/search"}, "CRM_SCREENPOP_URL"),
        ({"CRM_CHAT_ID_FORMATS": "MESSENGER"}, "CRM_CHAT_ID_FORMATS"),
        ({"CP_LOG_FORMAT": "xml"}, "CP_LOG_FORMAT"),
        ({"CP_HEALTH_TIMEOUT": "soon"}, "CP_HEALTH_TIMEOUT"),
        ({"CP_WEBCHAT_STARTS_PER_MINUTE": "lots"}, "CP_WEBCHAT_STARTS_PER_MINUTE"),
        ({"CP_WS_MAX_SOCKETS_PER_ADDRESS": "-1"}, "CP_WS_MAX_SOCKETS_PER_ADDRESS"),
        ({"CP_WS_MAX_FRAME_BYTES": "10"}, "CP_WS_MAX_FRAME_BYTES"),
        ({"CP_WS_FRAMES_PER_SECOND": "fast"}, "CP_WS_FRAMES_PER_SECOND"),
        ({"CP_MAX_MESSAGE_CHARS": "0"}, "CP_MAX_MESSAGE_CHARS"),
        ({"CP_TRUSTED_PROXIES": "10.0.0.1,nginx"}, "CP_TRUSTED_PROXIES"),
        ({"CP_WEBHOOK_MAX_BYTES": "1.5"}, "CP_WEBHOOK_MAX_BYTES"),
        ({"EMAIL_INBOUND_MAX_BYTES": "big"}, "EMAIL_INBOUND_MAX_BYTES"),
        ({"CP_IMPORT_UPLOAD_MAX_BYTES": "12"}, "CP_IMPORT_UPLOAD_MAX_BYTES"),
        ({"CP_IMPORT_FILE_MAX_BYTES": "1e3"}, "CP_IMPORT_FILE_MAX_BYTES"),
        ({"CP_MEMORY_TRIM_SECONDS": "-5"}, "CP_MEMORY_TRIM_SECONDS"),
    ],
)
def test_bad_configuration_fails_at_start_up_naming_the_variable(tmp_path, env, named):
    result = _check(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr.splitlines()[-1]


def test_the_defaults_start_with_no_configuration_at_all(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by its owner only


def test_a_good_configuration_starts(tmp_path):
    result = _check(
        tmp_path,
        CP_MODE="crm",
        CP_DEFAULT_REGION="se",
        DJANGO_DEBUG="false",
        WEBCHAT_REQUIRE_VERIFIED="yes",
        WEBCHAT_IDENTITY_SECRET="s",
        CRM_WEBHOOK_URL="https://crm.example/hook",
        CRM_WEBHOOK_SECRET="s",
        CRM_SCREENPOP_URL="https://crm.example/find?{kind}={value}",
        CRM_CHAT_ID_FORMATS="TELEGRAM=tg:{id}",
    )
    assert result.returncode == 0, result.stderr
