"""Minor units per currency: how many decimals an amount has (JPY 0, EUR 2, KWD 3).

Retain stores every amount (``amount_cents``, ``mrr_cents``) as a whole number of the currency's
minor unit as CLDR defines it (Babel's ``get_currency_precision``): 4900 is ¥4,900, €49.00 or
KWD 4.900. Stripe's API counts in its own smallest unit, which differs for a few currencies: its
zero-decimal list, its three-decimal list, and two decimals for everything else (ISK, HUF, COP,
IDR, ... are two-decimal in Stripe's API while CLDR gives them none), so Stripe amounts are
rescaled on the way in (https://docs.stripe.com/currencies#zero-decimal, #special-cases).
"""

from __future__ import annotations

from functools import cache

import pyarrow as pa
import pyarrow.compute as pc
from babel.numbers import get_currency_precision

DEFAULT_DIGITS = 2  # an amount whose currency is unknown: cents, as for USD

# Stripe's API amounts are in these currencies' whole units (docs.stripe.com/currencies).
STRIPE_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
STRIPE_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


@cache
def minor_digits(currency: str | None) -> int:
    """Decimals of ``currency``'s minor unit (CLDR); 2 when it is missing or unknown."""
    if not currency:
        return DEFAULT_DIGITS
    return int(get_currency_precision(currency.upper()))


def stripe_digits(currency: str | None) -> int:
    """Decimals of the unit Stripe's API counts ``currency`` amounts in."""
    code = (currency or "").upper()
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def digits_per_row(currencies: pa.Array | None, n: int, stripe: bool = False) -> pa.Array:
    """Per row, the decimals of its currency (Stripe's when ``stripe``): one look-up per distinct
    currency of the batch, then a vectorised take."""
    if currencies is None:
        return pa.repeat(pa.scalar(_digits(None, stripe), pa.int64()), n)
    distinct = pc.unique(currencies)
    table = pa.array([_digits(code, stripe) for code in distinct.to_pylist()], pa.int64())
    return table.take(pc.index_in(currencies, value_set=distinct))


def _digits(code: str | None, stripe: bool) -> int:
    return stripe_digits(code) if stripe else minor_digits(code)


POWERS = pa.array([10**k for k in range(19)], pa.int64())


def power_of_ten(digits: pa.Array) -> pa.Array:
    """10 ** ``digits``, element-wise, as int64."""
    return POWERS.take(digits)


def from_stripe(amount: int, currency: str | None) -> int:
    """One Stripe amount in ``currency``'s minor unit (half to even where Stripe's is finer)."""
    shift = minor_digits(currency) - stripe_digits(currency)
    if shift >= 0:
        return amount * 10**shift
    return round(amount / 10**-shift)
