"""Stripe-dashboard-shaped export files for import tests: the real column names, amounts in cents,
Unix timestamps, empty fields, names with commas and in several scripts."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

T0 = 1_780_000_000  # 2026-05-28 20:26:40 UTC
DAY = 86_400

CUSTOMER_COLUMNS = [
    "id",
    "Description",
    "Email",
    "Name",
    "Phone",
    "Address Country",
    "Created (UTC)",
    "Delinquent",
]
SUBSCRIPTION_COLUMNS = [
    "id", "Customer ID", "Customer Email", "Plan", "Product", "Quantity", "Interval", "Amount",
    "Status", "Created (UTC)", "Start (UTC)", "Current Period End (UTC)", "Canceled At (UTC)",
]  # fmt: skip
INVOICE_COLUMNS = [
    "id", "Customer", "Customer Email", "Subscription", "Amount Due", "Amount Paid", "Currency",
    "Status", "Attempt Count", "Date (UTC)", "Paid At (UTC)",
]  # fmt: skip
PAYMENT_METHOD_COLUMNS = [
    "id", "Customer ID", "Type", "Card Brand", "Card Last4", "Card Exp Month", "Card Exp Year",
    "Created (UTC)",
]  # fmt: skip

NAMES = [
    "Smith, John",  # a comma inside a quoted field
    "Åsa Öberg",
    "山田 太郎",
    "Дмитрий Иванов",
    "محمد الأحمد",
    "Ngọc Anh Trần",
]
PHONES = ["(650) 253-0000", "070-123 45 67", "+81 3-1234-5678", "", "+7 912 345-67-89", ""]
COUNTRIES = ["US", "SE", "JP", "DE", "RU", "VN"]


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def customers(count: int = 6) -> list[list[Any]]:
    return [
        [
            f"cus_{i:04d}",
            "",
            f"user{i}@example.com" if i != 3 else "",
            NAMES[i % len(NAMES)],
            PHONES[i % len(PHONES)],
            COUNTRIES[i % len(COUNTRIES)],
            T0 - (400 - i) * DAY,
            "false",
        ]
        for i in range(count)
    ]


def subscriptions(count: int = 6) -> list[list[Any]]:
    rows = []
    for i in range(count):
        yearly = i % 3 == 2
        rows.append(
            [
                f"sub_{i:04d}",
                f"cus_{i:04d}",
                f"user{i}@example.com",
                "team_yearly" if yearly else "team",
                "Team",
                1,
                "year" if yearly else "month",
                46_800 if yearly else 4_900,
                "active",
                T0 - (300 - i) * DAY,
                T0 - (300 - i) * DAY,
                T0 + (20 + i) * DAY,
                "",
            ]
        )
    return rows


def invoices(count: int = 6) -> list[list[Any]]:
    rows = []
    for i in range(count):
        failed = i % 2 == 1
        rows.append(
            [
                f"in_{i:04d}",
                f"cus_{i:04d}",
                f"user{i}@example.com",
                f"sub_{i:04d}",
                4_900,
                0 if failed else 4_900,
                "usd",
                "open" if failed else "paid",
                2 if failed else 1,
                T0 - 3 * DAY,
                "" if failed else T0 - 3 * DAY + 60,
            ]
        )
    return rows


def payment_methods(count: int = 6) -> list[list[Any]]:
    return [
        [
            f"pm_{i:04d}",
            f"cus_{i:04d}",
            "card",
            "visa",
            f"{4242 + i:04d}",
            6 + i % 6,
            2026,
            T0 - 200 * DAY,
        ]
        for i in range(count)
    ]
