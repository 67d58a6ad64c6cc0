from __future__ import annotations

import pytest

from phlo_core.redact import origin, redact, same_site


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://me:s3cr@t@ns.example/api failed", "s3cr"),
        ("cannot attach postgres:dbname=lake password='hunter 2' host=db", "hunter"),
        ("dsn password=plain-pw host=db", "plain-pw"),
        ("s3://KEYID:SECRETKEY@bucket/prefix", "SECRETKEY"),
    ],
)
def test_credentials_are_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_a_url_without_credentials_is_unchanged() -> None:
    text = "GET https://ns.example:8443/api/v1/entries.json returned HTTP 500"
    assert redact(text) == text


def test_origins_compare_with_default_ports_and_allow_an_https_upgrade() -> None:
    assert origin("https://ns.example:443/a?b=c") == "https://ns.example"
    assert same_site("https://ns.example", "https://ns.example:443/moved")
    assert same_site("http://ns.example", "https://ns.example/")
    assert not same_site("https://ns.example", "http://ns.example/")  # never a downgrade
    assert not same_site("https://ns.example", "https://evil.example/")
    assert not same_site("http://127.0.0.1:8080", "http://127.0.0.1:9090/")
