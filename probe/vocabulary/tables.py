"""The Markdown tables the docs carry of a vocabulary (a test keeps each doc equal to its table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

Code = TypeVar("Code", bound=str)  # a vocabulary's StrEnum


def markdown_table(key: str, meaning: str, descriptions: Mapping[Code, str]) -> str:
    """`| key | meaning |` and one row per entry, each key as code."""
    rows = [f"| {key} | {meaning} |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in descriptions.items()]
    return "\n".join(rows) + "\n"
