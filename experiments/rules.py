"""PLACEHOLDER: the segment rule language (being written)."""

from __future__ import annotations


class RuleError(ValueError):
    pass


def parse_rule(text: str) -> object:
    return text
