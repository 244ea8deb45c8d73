"""Templates, locale fallback, strict variables and SMS segment counting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from messaging import render as render_module
from messaging.links import sign
from messaging.render import (
    MessageContext,
    OfferContext,
    TemplateError,
    available_templates,
    build_links,
    message_token,
    render,
    sms_encoding,
    sms_segments,
    template_exists,
)

SHIPPED = {
    ("onboarding_checkin", "email"),
    ("onboarding_checkin_sms", "sms"),
    ("card_expiry", "email"),
    ("card_expiry_sms", "sms"),
    ("offer_discount", "email"),
    ("offer_pause", "email"),
    ("dunning_failed", "email"),
    ("dunning_sms", "sms"),
    ("dunning_reminder", "email"),
    ("dunning_final", "email"),
}
KEY = "card-expiry:42:1"
REF = message_token(KEY)


@pytest.fixture(autouse=True)
def _link_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "test-link-secret")


def context(**overrides: object) -> MessageContext:
    values: dict[str, object] = {
        "links": build_links("cus_0042", REF, "https://app.example.com"),
        "first_name": "Anna",
        "name": "Anna Berg",
        "plan": "Pro",
        "card_brand": "visa",
        "card_last4": "4242",
        "card_exp_month": 3,
        "card_exp_year": 2027,
        "offer": OfferContext("discount", 30, 3),
    }
    values.update(overrides)
    return MessageContext(**values)  # type: ignore[arg-type]


def test_the_shipped_templates_exist_in_five_locales() -> None:
    found = {(t, c): locales for t, c, locales in available_templates()}
    assert set(found) == SHIPPED
    for locales in found.values():
        assert set(locales) == {"en", "sv", "nl", "zh", "th"}
    assert template_exists("email", "card_expiry")
    assert not template_exists("sms", "card_expiry")  # no SMS files in that folder
    assert not template_exists("email", "no_such_template")
    assert not template_exists("fax", "card_expiry")


@pytest.mark.parametrize("locale", ["en", "sv"])
@pytest.mark.parametrize(("template", "channel"), sorted(SHIPPED))
def test_each_template_renders(template: str, channel: str, locale: str) -> None:
    offer = OfferContext("pause", None, 2) if template == "offer_pause" else None
    ctx = context(offer=offer or OfferContext("discount", 30, 3))
    message = render(channel, template, locale, ctx)
    assert message.channel == channel
    assert "Anna" in message.text
    links = ctx.links
    assert any(
        url in message.text for url in (links.app_url, links.update_payment_url, links.offer_url)
    )
    if channel == "email":
        assert message.subject and "{{" not in message.subject
        assert links.unsubscribe_url in message.text
        assert message.sms_segments is None
    else:
        assert message.subject is None and message.html is None
        assert "STOP" in message.text
        assert message.sms_segments == sms_segments(message.text) == 1
    other = render(channel, template, "sv" if locale == "en" else "en", ctx)
    assert other.text != message.text


def test_card_expiry_mentions_card_expiry_and_link() -> None:
    message = render("email", "card_expiry", "en", context())
    assert message.subject == "Your Visa card ending in 4242 expires at the end of March 2027"
    assert f"https://app.example.com/pay/cus_0042/{sign('pay', 'cus_0042', REF)}" in message.text
    swedish = render("email", "card_expiry", "sv", context())
    assert swedish.subject == "Ditt Visa-kort som slutar på 4242 går ut i slutet av mars 2027"


def test_card_expiry_without_card_details_still_reads_well() -> None:
    message = render(
        "email",
        "card_expiry",
        "en",
        context(card_brand=None, card_last4=None, card_exp_month=None, card_exp_year=None),
    )
    assert message.subject == "Your card on file expires soon"


def test_offer_wording() -> None:
    discount = render("email", "offer_discount", "en", context())
    assert discount.subject is not None and "30% off for 3 months" in discount.subject
    one_month = render("email", "offer_pause", "en", context(offer=OfferContext("pause", None, 1)))
    assert one_month.subject == "Need a break? Pause for 1 month instead of cancelling"


def test_locale_falls_back_to_language_then_english() -> None:
    ctx = context()
    swedish = render("email", "card_expiry", "sv", ctx)
    english = render("email", "card_expiry", "en", ctx)
    assert render("email", "card_expiry", "sv-SE", ctx) == swedish
    assert render("email", "card_expiry", "sv_SE", ctx) == swedish
    assert render("email", "card_expiry", "xx", ctx) == english
    assert render("email", "card_expiry", "", ctx) == english


def test_html_is_autoescaped_but_text_is_not() -> None:
    message = render("email", "card_expiry", "en", context(first_name="<b>Ann</b>"))
    assert message.html is not None
    assert "&lt;b&gt;Ann&lt;/b&gt;" in message.html and "<b>Ann</b>" not in message.html
    assert "Hi <b>Ann</b>," in message.text
    # Query-free links survive escaping unchanged.
    assert (
        f'href="https://app.example.com/pay/cus_0042/{sign("pay", "cus_0042", REF)}"'
        in message.html
    )


def test_missing_variable_names_the_file_and_line() -> None:
    with pytest.raises(TemplateError) as info:
        render("email", "offer_discount", "en", context(offer=None))
    assert "messaging/templates/offer_discount/en.email.txt.j2:1" in str(info.value)
    assert "months" in str(info.value)


def test_unknown_template_and_channel() -> None:
    with pytest.raises(TemplateError, match="unknown email template 'nope'"):
        render("email", "nope", "en", context())
    with pytest.raises(TemplateError, match="unknown channel 'fax'"):
        render("fax", "card_expiry", "en", context())


@pytest.fixture
def scratch_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the renderer at an empty template folder for this test."""
    monkeypatch.setattr(render_module, "TEMPLATES_DIR", tmp_path)
    render_module._environment.cache_clear()
    yield tmp_path
    render_module._environment.cache_clear()


def test_undefined_variable_line_number(scratch_templates: Path) -> None:
    (scratch_templates / "demo").mkdir()
    (scratch_templates / "demo" / "en.email.txt.j2").write_text(
        "Subject: Hello\n\nline three\n{{ first_name }}\n{{ nickname }}\n"
    )
    with pytest.raises(TemplateError) as info:
        render("email", "demo", "en", context())
    assert str(info.value).startswith("messaging/templates/demo/en.email.txt.j2:5:")
    assert "nickname" in str(info.value)


def test_syntax_error_line_number(scratch_templates: Path) -> None:
    (scratch_templates / "demo").mkdir()
    (scratch_templates / "demo" / "en.sms.j2").write_text("Hi\n{% if first_name %}\nno end\n")
    with pytest.raises(TemplateError, match=r"demo/en\.sms\.j2:\d+: template syntax error"):
        render("sms", "demo", "en", context())


def test_email_needs_a_subject_line(scratch_templates: Path) -> None:
    (scratch_templates / "demo").mkdir()
    (scratch_templates / "demo" / "en.email.txt.j2").write_text("Hello {{ first_name }}\n")
    with pytest.raises(TemplateError, match=r"en\.email\.txt\.j2:1: .*'Subject: \.\.\.'"):
        render("email", "demo", "en", context())


def test_a_locale_without_english_fallback_is_not_a_template(scratch_templates: Path) -> None:
    (scratch_templates / "demo").mkdir()
    (scratch_templates / "demo" / "sv.sms.j2").write_text("Hej\n")
    assert not template_exists("sms", "demo")
    assert render("sms", "demo", "sv-SE", context()).text == "Hej"
    with pytest.raises(TemplateError, match="no English fallback"):
        render("sms", "demo", "de", context())


def test_links_use_the_base_url_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_APP_BASE_URL", "https://retain.test/")
    links = build_links("cus 1/x", REF)
    assert links.app_url == "https://retain.test/"
    token = sign("unsubscribe", "cus 1/x", REF)
    assert links.unsubscribe_url == f"https://retain.test/unsubscribe/cus%201%2Fx/{token}"
    monkeypatch.delenv("RETAIN_APP_BASE_URL")
    assert (
        build_links("c", REF).offer_url
        == f"https://app.example.com/offer/c/{sign('offer', 'c', REF)}"
    )


# --- SMS segments: GSM-7 160 / 153 per part, UCS-2 70 / 67 per part ------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),  # 2 x 153
        ("a" * 307, 3),
        ("a" * 158 + "€", 1),  # the euro sign takes two septets: 160
        ("a" * 159 + "€", 2),  # 161
        ("{" * 80, 1),
        ("{" * 81, 2),
        ("Hej Åsa, välkommen tillbaka! Ö ä ü é", 1),  # all in the GSM basic table
        ("a" * 70 + "’", 2),  # one curly quote -> UCS-2: 71 units
        ("a" * 69 + "’", 1),
        ("’" * 134, 2),  # 2 x 67
        ("’" * 135, 3),
        ("a" * 68 + "😀", 1),  # an emoji is two UTF-16 units: 70
        ("a" * 69 + "😀", 2),
    ],
)
def test_sms_segments(text: str, segments: int) -> None:
    assert sms_segments(text) == segments


def test_one_curly_quote_switches_to_ucs2() -> None:
    plain = "It's " + "a" * 150
    curly = plain.replace("'", "’")
    assert (sms_encoding(plain), sms_segments(plain)) == ("GSM-7", 1)
    assert (sms_encoding(curly), sms_segments(curly)) == ("UCS-2", 3)  # 155 units / 67
