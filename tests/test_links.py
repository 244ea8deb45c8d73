"""Signed link tokens and offer codes (messaging/links.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from messaging.links import (
    MAC_LENGTH,
    REF_LENGTH,
    LinkSecret,
    LinkSecretError,
    default_secret_warning,
    link_secret,
    message_ref,
    offer_code,
    sign,
    verify_link_token,
)

SECRET = LinkSecret(b"k" * 32, "env", "test")
OTHER = LinkSecret(b"z" * 32, "env", "test")


def test_a_signed_token_verifies_for_its_action_and_customer_only() -> None:
    ref = message_ref("card-expiry-reminder:cus_000042:email:0")
    token = sign("unsubscribe", "cus_000042", ref, SECRET)
    assert len(token) == REF_LENGTH + MAC_LENGTH == 18
    verified = verify_link_token("unsubscribe", "cus_000042", token, SECRET)
    assert verified is not None and verified.ref == ref
    assert verify_link_token("pay", "cus_000042", token, SECRET) is None  # other action
    assert verify_link_token("unsubscribe", "cus_000043", token, SECRET) is None  # other customer
    assert verify_link_token("unsubscribe", "cus_000042", token, OTHER) is None  # other key


def test_the_old_unsigned_token_and_tampered_tokens_are_rejected() -> None:
    ref = message_ref("k")
    token = sign("pay", "cus_1", ref, SECRET)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert verify_link_token("pay", "cus_1", flipped, SECRET) is None
    other_ref = message_ref("k2") + token[REF_LENGTH:]  # a valid MAC moved to another message
    assert verify_link_token("pay", "cus_1", other_ref, SECRET) is None
    # What links carried before: sha256(experiment:customer:arm:step)[:12], forgeable by anyone.
    assert verify_link_token("pay", "cus_1", "0123456789ab", SECRET) is None
    assert verify_link_token("pay", "cus_1", token + "x", SECRET) is None
    assert verify_link_token("pay", "cus_1", "<script>alert</s", SECRET) is None
    assert verify_link_token("pay", "cus_1", "", SECRET) is None


def test_the_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_LINK_SECRET", "from-env")
    secret = link_secret()
    assert (secret.key, secret.source) == (b"from-env", "env")
    assert "from-env" not in repr(secret)  # never printed
    assert default_secret_warning() is None
    token = sign("pay", "c", "abcdef")
    monkeypatch.setenv("RETAIN_LINK_SECRET", "rotated")
    assert verify_link_token("pay", "c", token) is None


def test_without_a_secret_a_per_install_demo_key_is_made_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RETAIN_LINK_SECRET", raising=False)
    monkeypatch.delenv("RETAIN_LINK_SECRET_BLOCK", raising=False)
    monkeypatch.setenv("RETAIN_STATE_DIR", str(tmp_path / "state"))
    first = link_secret()
    path = tmp_path / "state" / "link-secret"
    assert first.is_default and first.where == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.key) >= 40
    warning = default_secret_warning()
    assert warning is not None and "RETAIN_LINK_SECRET" in warning and str(path) in warning
    assert first.key.decode() not in warning
    # Another install (another state folder) gets another key; the same one keeps its own.
    monkeypatch.setenv("RETAIN_STATE_DIR", str(tmp_path / "other"))
    assert link_secret().key != first.key
    monkeypatch.setenv("RETAIN_STATE_DIR", str(tmp_path / "state"))
    assert link_secret().key == path.read_bytes().strip() == first.key


def test_offer_codes_are_stable_distinct_and_readable() -> None:
    codes = {
        offer_code("falling-usage-offer", f"cus_{i:06d}", "discount", SECRET) for i in range(20_000)
    }
    assert len(codes) == 20_000
    code = offer_code("falling-usage-offer", "cus_000001", "discount", SECRET)
    assert code == offer_code("falling-usage-offer", "cus_000001", "discount", SECRET)
    assert code != offer_code("falling-usage-offer", "cus_000001", "pause", SECRET)
    assert code != offer_code("falling-usage-offer", "cus_000001", "discount", OTHER)
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4]
    assert not set(code) & set("ILOU")  # no look-alikes


@pytest.mark.prefect
def test_the_secret_can_live_in_a_prefect_secret_block(
    prefect_api: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    Secret(value="from-a-block").save("retain-link-secret-test", overwrite=True)
    monkeypatch.delenv("RETAIN_LINK_SECRET", raising=False)
    monkeypatch.setenv("RETAIN_LINK_SECRET_BLOCK", "retain-link-secret-test")
    secret = link_secret()
    assert (secret.key, secret.source) == (b"from-a-block", "prefect")
    assert "from-a-block" not in repr(secret) and default_secret_warning() is None
    monkeypatch.setenv("RETAIN_LINK_SECRET_BLOCK", "no-such-block")
    with pytest.raises(LinkSecretError, match="no-such-block"):
        link_secret()
