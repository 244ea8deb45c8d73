"""Every shipped campaign in all five locales: renders with full and with sparse customer facts,
stays strict about variables, formats money and dates with Babel, escapes HTML, and keeps SMS
within the segment budget."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from experiments.loader import parse_spec
from messaging.formatting import format_day, format_money, format_month_year
from messaging.render import (
    MessageContext,
    OfferContext,
    TemplateError,
    available_templates,
    build_links,
    locale_candidates,
    message_token,
    render,
    sms_encoding,
)
from messaging.sms_budget import budget_warnings, worst_cases

LOCALES = {"en": "en-US", "sv": "sv-SE", "nl": "nl-NL", "zh": "zh-CN", "th": "th-TH"}
CURRENCY = {"en": "USD", "sv": "SEK", "nl": "EUR", "zh": "CNY", "th": "THB"}
CAMPAIGNS = sorted((t, c) for t, c, _ in available_templates())
UCS2_LANGUAGES = {"zh", "th"}


@pytest.fixture(autouse=True)
def _link_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "test-link-secret")
    monkeypatch.delenv("RETAIN_APP_BASE_URL", raising=False)


def full(language: str, **overrides: object) -> MessageContext:
    values: dict[str, object] = {
        "links": build_links("cus_000042", message_token("x:cus_000042:arm:0")),
        "first_name": "Anna",
        "name": "Anna Berg",
        "plan": "Team",
        "card_brand": "visa",
        "card_last4": "4242",
        "card_exp_month": 3,
        "card_exp_year": 2027,
        "offer": OfferContext("discount", 30, 3, "AB12-CD34-EF56"),
        "currency": CURRENCY[language],
        "amount_due_minor": 49_900,
        "due_date": date(2026, 12, 1),
        "cancel_date": date(2026, 12, 28),
    }
    values.update(overrides)
    return MessageContext(**values)  # type: ignore[arg-type]


def sparse(template: str) -> MessageContext:
    """What a customer with no name, plan, card, amount or dates looks like."""
    offer = (
        OfferContext("discount", 10, 1)
        if "discount" in template
        else OfferContext("pause", None, 1)
    )
    return MessageContext(
        links=build_links("cus_000042", message_token("x:cus_000042:arm:0")), offer=offer
    )


def test_five_locales_for_every_campaign() -> None:
    assert len(CAMPAIGNS) == 10
    for _template, _channel, locales in available_templates():
        assert set(locales) == set(LOCALES)


@pytest.mark.parametrize("language", sorted(LOCALES))
@pytest.mark.parametrize(("template", "channel"), CAMPAIGNS)
def test_every_campaign_renders_in_every_locale(template: str, channel: str, language: str) -> None:
    locale = LOCALES[language]
    ctx = full(language)
    message = render(channel, template, locale, ctx)
    english = render(channel, template, "en", ctx)
    if language != "en":
        assert message.text != english.text  # really translated, not the fallback
    bare = render(channel, template, locale, sparse(template))
    for text in (message.text, bare.text, message.subject or "", bare.subject or ""):
        assert "{{" not in text and "{%" not in text
        assert "None" not in text and "none" not in text
    links = [ctx.links.update_payment_url, ctx.links.offer_url, ctx.links.app_url]
    assert any(url in message.text for url in links)  # a direct link to act on
    if channel == "email":
        assert message.subject and message.html is not None
        assert ctx.links.unsubscribe_url in message.text
        assert f'href="{ctx.links.unsubscribe_url}"' in message.html
        assert f'<html lang="{language}">' in message.html
    else:
        assert "STOP" in message.text
        assert message.sms_segments is not None
        encoding = "UCS-2" if language in UCS2_LANGUAGES else "GSM-7"
        assert sms_encoding(message.text) == encoding
        # Typical customers: one GSM-7 part; Chinese and Thai (UCS-2, 70/67) at most two.
        assert message.sms_segments <= (2 if language in UCS2_LANGUAGES else 1)


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (49_900, "SEK", "sv-SE", "499,00\u00a0kr"),
        (129_900, "THB", "th-TH", "฿1,299.00"),
        (9_900, "CNY", "zh-CN", "¥99.00"),
        (4_900, "EUR", "nl-NL", "€\u00a049,00"),
        (123_456, "USD", "en-US", "$1,234.56"),
        (500, "JPY", "en-US", "¥500"),  # no minor units
    ],
)
def test_money_is_formatted_by_babel(
    amount: int, currency: str, locale: str, expected: str
) -> None:
    assert format_money(amount, currency, locale) == expected


def test_dates_follow_the_customer_locale() -> None:
    day = date(2027, 3, 4)
    assert format_day(day, "sv-SE") == "4 mars 2027"
    assert format_day(day, "en-US") == "March 4, 2027"
    assert format_day(day, "zh-CN") == "2027年3月4日"
    assert format_day(day, "nl-NL") == "4 maart 2027"
    assert format_month_year(3, 2027, "th-TH") == "มีนาคม 2027"
    with pytest.raises(ValueError, match="unknown currency"):
        format_money(100, "XYZ", "en")


def test_dunning_uses_amount_and_dates_in_the_customer_locale() -> None:
    swedish = render("email", "dunning_failed", "sv-SE", full("sv"))
    assert swedish.subject == "Din betalning på 499,00\u00a0kr gick inte igenom"
    assert "den 1 december 2026" in swedish.text
    final = render("email", "dunning_final", "zh-CN", full("zh"))
    assert final.subject == "最后提醒：您的订阅将于2026年12月28日终止"
    thai = render("email", "dunning_reminder", "th-TH", full("th"))
    assert "฿499.00" in thai.text and "28 ธันวาคม 2026" in thai.text
    # A Swede billed in US dollars: Swedish words, Swedish number format, the right currency.
    usd = render("email", "dunning_failed", "sv-SE", full("sv", currency="USD"))
    assert "499,00\u00a0US$" in usd.text
    # A German customer gets the English template, so amounts read the English way.
    german = render("email", "dunning_failed", "de-DE", full("en", currency="EUR"))
    assert "€499.00" in german.text


def test_sms_stays_gsm7_with_cldr_spaces_and_accented_names() -> None:
    sms = render("sms", "dunning_sms", "sv-SE", full("sv", first_name="Zoë"))
    assert "499,00 kr" in sms.text  # the no-break space became a plain one
    assert "Hej Zoe!" in sms.text  # ë is not GSM-7: folded rather than tripling the cost
    assert (sms_encoding(sms.text), sms.sms_segments) == ("GSM-7", 1)
    chinese = render("sms", "dunning_sms", "zh-CN", full("zh", first_name="Zoë"))
    assert "Zoë" in chinese.text  # UCS-2 anyway: nothing to gain by folding


@pytest.mark.parametrize("language", sorted(LOCALES))
def test_customer_names_are_escaped_in_html(language: str) -> None:
    evil = '<script>alert("x")</script>&'
    for template, channel in CAMPAIGNS:
        if channel != "email":
            continue
        message = render(
            channel, template, LOCALES[language], full(language, first_name=evil, plan=evil)
        )
        assert message.html is not None
        assert "<script>" not in message.html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in message.html
        assert evil in message.text  # the text part is plain text


def test_html_has_a_button_for_the_action_in_the_language() -> None:
    message = render("email", "dunning_failed", "nl-NL", full("nl"))
    assert message.html is not None
    link = full("nl").links.update_payment_url
    assert f'<a href="{link}"' in message.html and "Betaalgegevens bijwerken</a>" in message.html
    offer = render("email", "offer_discount", "zh-CN", full("zh"))
    assert offer.html is not None and "领取优惠</a>" in offer.html


def test_locale_fallback_chain() -> None:
    assert locale_candidates("sv-SE", "nl") == ["sv-SE", "sv", "nl", "en"]
    assert locale_candidates("zh-TW") == ["zh-TW", "en"]  # never simplified for traditional
    ctx = full("en")
    dutch = render("email", "card_expiry", "nl", ctx)
    assert render("email", "card_expiry", "de-DE", ctx, default_locale="nl") == dutch
    assert render("email", "card_expiry", "sv_SE", ctx, default_locale="nl").text.startswith("Hej")
    assert render("email", "card_expiry", "de-DE", ctx).text.startswith("Hi Anna")


def test_a_missing_variable_is_an_error_naming_template_and_variable() -> None:
    with pytest.raises(TemplateError) as info:
        render("email", "offer_pause", "th-TH", full("th", offer=None))
    message = str(info.value)
    assert message.startswith("messaging/templates/offer_pause/th.email.txt.j2:")
    assert "'None' has no attribute 'months'" in message


def test_worst_case_sms_fit_the_shipped_budgets() -> None:
    for template in ("card_expiry_sms", "dunning_sms"):
        checks = worst_cases(template)
        assert {c.locale for c in checks} == set(LOCALES)
        assert max(c.segments for c in checks) == 2
        assert {c.encoding for c in checks if c.locale in UCS2_LANGUAGES} == {"UCS-2"}


SPEC = """
key: sms-budget
hypothesis: h
segment: {{where: "tenure_days > 1"}}
arms:
  - {{name: control}}
  - name: sms
    steps: [{{at: 0d, channel: sms, template: dunning_sms}}]
metrics: {{primary: payment_recovered_14d}}
messaging: {{sms_max_segments: {budget}}}
"""


def test_budget_warnings_name_the_template_locale_and_fix() -> None:
    tight = parse_spec(SPEC.format(budget=1)).spec
    warnings = budget_warnings(tight)
    assert {w.split("(")[1].split(")")[0] for w in warnings} == set(LOCALES)
    assert all("dunning_sms" in w and "sms_max_segments: 1" in w for w in warnings)
    assert budget_warnings(parse_spec(SPEC.format(budget=2)).spec) == []


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=40
    )
    .map(str.strip)  # first names come from name.split(): no surrounding whitespace
    .filter(lambda s: s != "" and "://" not in s),
    language=st.sampled_from(sorted(LOCALES)),
)
def test_any_customer_name_renders_safely(name: str, language: str) -> None:
    """Whatever a customer typed as their name: every campaign renders, the HTML never carries
    it as markup, and the text part carries it as typed."""
    ctx = full(language, first_name=name)
    for template, channel in CAMPAIGNS:
        message = render(channel, template, LOCALES[language], ctx)
        if channel == "email":
            assert message.html is not None
            assert name in message.text
            assert str(escape(name)) in message.html  # as text, escaped
            if "<" in name or "&" in name:
                assert name not in message.html
        else:
            assert message.sms_segments is not None and message.sms_segments <= 10
