"""What a field's name says (veil.personal.classify_name), on names seen in published API descriptions:
the value itself (`sender_email`, `verification_phone_number`) versus something about it (the subject
line of an e-mail, a password setting, an event about an IP allow-list)."""

from __future__ import annotations

import pytest

from veil.personal import classify_name


@pytest.mark.parametrize(("name", "category"), [
    ("sender_email", "contact.email"), ("notification_email", "contact.email"),
    ("created_by_user_email", "contact.email"), ("verification_phone_number", "contact.phone"),
    ("ip_address", "online.ip"), ("password", "credentials"), ("basic_auth_password", "credentials"),
    ("user_billing_address", "contact.address"), ("dateOfBirth", "demographics.birth_date"),
])
def test_the_value_itself(name: str, category: str) -> None:
    hit = classify_name([name])
    assert hit is not None and hit.category == category


@pytest.mark.parametrize("name", [
    "email_subject", "email_message", "email_footer_text", "emailBody", "strong_password_requirement",
    "ip_allowlist.created", "ip_allowlist.config.deactivated", "phone_updated", "address_deleted",
    "email_domain",
])
def test_something_about_it(name: str) -> None:
    assert classify_name([name]) is None
