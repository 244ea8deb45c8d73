"""Settings of imports and the Stripe integration, from the environment (``RETAIN_...``).

Secrets are ``SecretStr``: they never print, and nothing here logs them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ImportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore")

    default_phone_region: str | None = Field(
        None,
        pattern=r"^[A-Za-z]{2}$",
        description="region for phone numbers without +country code when the row has no country",
    )
    stripe_api_key: SecretStr | None = Field(None, description="restricted, read-only key")
    stripe_api_base: str = "https://api.stripe.com"
    stripe_secret_block: str | None = Field(
        None, description="name of a Prefect Secret block holding the key, used when no key is set"
    )
    stripe_webhook_secret: SecretStr | None = Field(None, description="whsec_... signing secret")
