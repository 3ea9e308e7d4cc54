"""What a class is worth: the manifest's optional `denominations` section.

A controller pays out or credits by value, not by label: `{"100000_vnd": {"value":
100000, "currency": "VND"}}` makes every event for that class carry its value and ISO 4217
currency. Checked when the bundle loads (a value for a label the model does not have is a
typo); a bundle without the section gives events without them, as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_LABEL = re.compile(r"^(\d+(?:\.\d+)?)_([A-Za-z]{3})$")  # 50000_vnd, 0.5_eur


class Denomination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float = Field(gt=0, description="face value in the currency's units")
    currency: str = Field(pattern="^[A-Z]{3}$", description="ISO 4217 code, e.g. VND")


def denominations(manifest: dict[str, Any], labels: Sequence[str]) -> dict[str, Denomination]:
    """The manifest's denominations, checked against the labels (ValueError naming the
    problem)."""
    section = manifest.get("denominations") or {}
    if not isinstance(section, dict):
        raise ValueError("manifest 'denominations' must map labels to {value, currency}")
    unknown = sorted(set(section) - set(labels))
    if unknown:
        raise ValueError(f"manifest 'denominations' names labels the model does not have: "
                         f"{unknown}")
    try:
        return {k: Denomination.model_validate(v) for k, v in section.items()}
    except ValidationError as err:
        e = err.errors()[0]
        raise ValueError(f"manifest 'denominations': {'.'.join(map(str, e['loc']))}: "
                         f"{e['msg']}") from None


def from_labels(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The trainer's default: labels written <amount>_<currency> (50000_vnd) say it."""
    out = {}
    for label in labels:
        m = _LABEL.match(label)
        if m:
            value = float(m.group(1))
            out[label] = {"value": int(value) if value.is_integer() else value,
                          "currency": m.group(2).upper()}
    return out
