"""The reject path: does a frame count as a vote for its top-1 class? (pure numpy + pydantic)

A bundle's manifest carries its operating point in a ``decision`` section, chosen by the
trainer on validation data: a score threshold per class, the labels that are never
accepted (background, unknown, refused) and an out-of-distribution rule.
``device.policy`` resolves it with the device config into one Policy, and its ``judge()``
is the only function that decides a frame (the daemon, ``coral-classifier classify`` and
``coral-train evaluate`` all call it).

OOD scores (larger = less like anything the model was trained on):

- ``max_softmax``: 1 - the top-1 probability (the baseline; needs only the scores).
- ``class_mean_cosine``: 1 - the cosine similarity between the frame's penultimate
  features and the mean features of its top-1 class. The model computes the similarities
  itself (an L2_NORMALIZATION and a FULLY_CONNECTED whose weights are the normalised class
  means, both on the Edge TPU) and returns them as a second output, ``outputs[rule.output]``,
  one value per label; the device only reads one number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_THRESHOLD = 0.7


class OodRule(BaseModel):
    """Reject a frame whose OOD score is above ``threshold`` (per class when listed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["max_softmax", "class_mean_cosine"]
    threshold: float = Field(description="reject when the OOD score is above this")
    class_thresholds: dict[str, float] = Field(
        default_factory=dict, description="per-class OOD thresholds overriding `threshold`")
    output: int = Field(1, ge=0, description="class_mean_cosine: the output index holding "
                                             "one cosine similarity per label")


class OperatingPoint(BaseModel):
    """The manifest's ``decision`` section: when a frame counts as a vote for its label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=1,
                             description="top-1 score needed to accept")
    class_thresholds: dict[str, float] = Field(default_factory=dict,
                                               description="per-class score thresholds")
    background_labels: list[str] = Field(default_factory=list,
                                         description="labels of an empty scene: never accepted")
    unknown_labels: list[str] = Field(default_factory=list,
                                      description="labels of a trained 'other' class: never "
                                                  "accepted")
    refused_labels: list[str] = Field(
        default_factory=list, description="notes the model learned in order to refuse them "
        "(`coral-train train --refuse`): recognised, never accepted; an event `refused`")
    ood: OodRule | None = None

    @property
    def outputs_needed(self) -> int:
        """How many model outputs judge() reads."""
        if self.ood is not None and self.ood.kind == "class_mean_cosine":
            return self.ood.output + 1
        return 1


@dataclass(frozen=True)
class Verdict:
    """Whether one frame counts as a vote for ``label``, and why."""

    label: str
    score: float
    accepted: bool
    ood_score: float | None
    reason: str  # accepted | background | unknown | below_threshold | out_of_distribution
    #              | refused | not_in_accept_list | margin

    @property
    def verdict(self) -> str:
        """The one vocabulary every surface shows: accepted, refused (a known note switched
        off or learned in order to refuse it: hand it back), empty (the slot's background)
        or unknown (not recognised)."""
        if self.accepted:
            return "accepted"
        if self.reason in ("refused", "not_in_accept_list"):
            return "refused"
        if self.reason == "background":
            return "empty"
        return "unknown"

    @property
    def explanation(self) -> str:
        """The reason in plain language, for the web page and the CLI."""
        return REASONS.get(self.reason, self.reason)


REASONS = {
    "accepted": "accepted",
    "background": "nothing in the slot",
    "unknown": "recognised as something that is not a note we take",
    "below_threshold": "not sure enough what this is",
    "margin": "too close between two classes",
    "out_of_distribution": "does not look like anything the model was taught",
    "refused": "a note this machine refuses",
    "not_in_accept_list": "a known note this machine is set not to accept",
    "foreign_object": "something is in the slot, but not a note we know",
}


def ood_score(rule: OodRule, scores: np.ndarray, outputs: Sequence[np.ndarray],
              top: int) -> float:
    """The rule's OOD score of one frame whose top-1 class id is ``top``."""
    if rule.kind == "max_softmax":
        return 1.0 - float(scores[top])
    if rule.output >= len(outputs):
        raise ValueError(f"OOD rule {rule.kind} reads output {rule.output} but the model gave "
                         f"{len(outputs)} output(s): the bundle's model and manifest disagree")
    sims = np.asarray(outputs[rule.output], np.float32).reshape(-1)
    if sims.shape[0] != scores.shape[0]:
        raise ValueError(f"OOD output {rule.output} has {sims.shape[0]} values for "
                         f"{scores.shape[0]} classes")
    return 1.0 - float(sims[top])


def operating_point(manifest: dict[str, Any]) -> OperatingPoint | None:
    """The manifest's ``decision`` section, or None when it has none (older bundles).

    Raises ValueError naming the bad field when the section is malformed.
    """
    section = manifest.get("decision")
    if section is None:
        return None
    try:
        return OperatingPoint.model_validate(section)
    except ValidationError as err:
        bad = "; ".join(f"decision.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                        for e in err.errors())
        raise ValueError(f"manifest 'decision' section is invalid: {bad}") from None


def model_outputs(manifest: dict[str, Any]) -> list[str]:
    """The names of the model's outputs in order (``["scores"]`` for older bundles)."""
    outputs = manifest.get("outputs", ["scores"])
    if not isinstance(outputs, list) or not outputs or outputs[0] != "scores":
        raise ValueError(f"manifest 'outputs' must be a list starting with 'scores', got "
                         f"{outputs!r}")
    return [str(o) for o in outputs]


def fallback_point(labels: Sequence[str]) -> OperatingPoint:
    """The rule for a bundle without a decision section: top-1 ≥ 0.7 and not a label that
    names an empty scene or 'other' (no reject path for things it was not trained on)."""
    background = [lb for lb in labels if lb.lower() in ("background", "empty", "none")]
    unknown = [lb for lb in labels if lb.lower() in ("unknown", "other")]
    return OperatingPoint(background_labels=background, unknown_labels=unknown)


def read_outputs(interpreter) -> list[np.ndarray]:
    """Every output tensor of an interpreter that has just been invoked, dequantized to
    float32, in the model's output order (what judge() takes)."""
    out = []
    for d in interpreter.get_output_details():
        raw = np.asarray(interpreter.get_tensor(d["index"])).reshape(-1)
        scale, zero = d.get("quantization", (0.0, 0))
        if np.issubdtype(raw.dtype, np.floating) or not scale:
            out.append(raw.astype(np.float32))
        else:
            out.append((raw.astype(np.float32) - zero) * np.float32(scale))
    return out
