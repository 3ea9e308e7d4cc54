"""The one decision path: a frame's outputs → a Verdict, under one resolved Policy.

Three sources say when a frame counts: the bundle's operating point (its manifest's
``decision`` section, chosen by the trainer), the device config's ``[decision]`` keys the
operator sets, and a region's own thresholds and ``accept`` list. They are resolved once,
into one frozen :class:`Policy`, when a model is loaded (``resolve_policy``); ``judge()``
is then the only function that turns a frame's outputs into a verdict. Stream results,
events (the decider only counts verdicts), the web page, capture, ``classify --json`` and
``coral-train evaluate`` all go through it, so the same frame can never be accepted on one
surface and refused on another.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from device.openset import DEFAULT_THRESHOLD, OodRule, OperatingPoint, Verdict, ood_score
from device.regions import crop
from device.scene import EmptyScene

# The [decision] keys an operator may set to override the bundle's operating point.
OVERRIDABLE = ("threshold", "class_thresholds", "background_labels", "unknown_labels")


def _frozen_map(m: Mapping[str, float] | None) -> Mapping[str, float]:
    return MappingProxyType({str(k): float(v) for k, v in (m or {}).items()})


@dataclass(frozen=True)
class Policy:
    """When a frame is accepted as its top-1 class; everything resolved, nothing optional.

    ``accept`` None means every known class may be accepted; a set means only those (a
    known class outside it is recognised and refused: the machine hands the note back).
    """

    threshold: float = DEFAULT_THRESHOLD
    class_thresholds: Mapping[str, float] = field(default_factory=lambda: _frozen_map({}))
    background_labels: frozenset[str] = frozenset()
    unknown_labels: frozenset[str] = frozenset()
    refused_labels: frozenset[str] = frozenset()
    accept: frozenset[str] | None = None
    margin: float = 0.0
    ood: OodRule | None = None

    @classmethod
    def from_point(cls, point: OperatingPoint) -> Policy:
        """The bundle's operating point alone (``classify``, ``coral-train evaluate``)."""
        return cls(point.threshold, _frozen_map(point.class_thresholds),
                   frozenset(point.background_labels), frozenset(point.unknown_labels),
                   frozenset(point.refused_labels), None, 0.0, point.ood)

    def threshold_for(self, label: str) -> float:
        return self.class_thresholds.get(label, self.threshold)

    @property
    def unknown_events(self) -> bool:
        """With an empty-slot class, frames that stay unsure are an object we do not know
        (an `unknown` event); without one, an unsure frame is all we have for "empty"."""
        return bool(self.background_labels)


class DecisionSettings(Protocol):
    """What resolve_policy reads of the config's [decision] section (a pydantic model)."""

    model_fields_set: set[str]
    threshold: float
    class_thresholds: dict[str, float]
    background_labels: tuple[str, ...]
    unknown_labels: tuple[str, ...]
    margin: float
    accept: tuple[str, ...] | None


class RegionSettings(Protocol):
    threshold: float | None
    class_thresholds: dict[str, float]
    accept: tuple[str, ...] | None


def resolve_policy(point: OperatingPoint, config: DecisionSettings | None = None,
                   region: RegionSettings | None = None) -> Policy:
    """The bundle's point, then the config's keys the operator set, then the region's.

    A key the config leaves at its default does not override the bundle (the trainer's
    threshold is measured; the config's default is a guess).
    """
    chosen: dict[str, Any] = {k: getattr(point, k) for k in OVERRIDABLE}
    margin, accept = 0.0, None
    if config is not None:
        for k in OVERRIDABLE:
            if k in config.model_fields_set:
                chosen[k] = getattr(config, k)
        if {"threshold", "class_thresholds"} & config.model_fields_set == {"threshold"}:
            chosen["class_thresholds"] = {}  # the operator's threshold is for every class
        margin, accept = config.margin, config.accept
    thresholds = dict(chosen["class_thresholds"])
    if region is not None:
        if region.threshold is not None:
            chosen["threshold"] = region.threshold
            # a region's own threshold is meant for every class in it
            thresholds = {k: v for k, v in thresholds.items() if k in region.class_thresholds}
        thresholds.update(region.class_thresholds)
        if region.accept is not None:
            accept = region.accept
    return Policy(float(chosen["threshold"]), _frozen_map(thresholds),
                  frozenset(chosen["background_labels"]), frozenset(chosen["unknown_labels"]),
                  frozenset(point.refused_labels),
                  None if accept is None else frozenset(accept), float(margin), point.ood)


def judge(policy: Policy | OperatingPoint, labels: Sequence[str],
          outputs: Sequence[np.ndarray]) -> Verdict:
    """Decide whether a frame is accepted as its top-1 class, and why not.

    Args:
        policy: the resolved policy (an OperatingPoint is taken as the bundle's alone).
        labels: the model's labels, id order.
        outputs: the model's output tensors dequantized to float32, in the model's output
            order; ``outputs[0]`` holds the class scores.

    Returns:
        The top-1 label and score, whether it is accepted, the OOD score (None without an
        OOD rule) and the reason, checked in this order: background, a trained unknown
        class, below its threshold, too close to the runner-up (margin), out of
        distribution, then refused (learned in order to refuse, or not in ``accept``).
        Refusal comes last on purpose: a refused note must be recognised with the same
        confidence as an accepted one, or it is simply not recognised (unknown).
    """
    if isinstance(policy, OperatingPoint):
        policy = Policy.from_point(policy)
    if not outputs:
        raise ValueError("judge() needs the model's outputs; got none")
    scores = np.asarray(outputs[0], np.float32).reshape(-1)
    if scores.shape[0] != len(labels):
        raise ValueError(f"{scores.shape[0]} scores for {len(labels)} labels")
    top = int(np.argmax(scores))
    label, score = labels[top], float(scores[top])
    ood = None if policy.ood is None else ood_score(policy.ood, scores, outputs, top)

    def no(reason: str) -> Verdict:
        return Verdict(label, score, False, ood, reason)

    if label in policy.background_labels:
        return no("background")
    if label in policy.unknown_labels:
        return no("unknown")
    if score < policy.threshold_for(label):
        return no("below_threshold")
    if policy.margin > 0 and scores.shape[0] > 1:
        second = float(np.partition(scores, -2)[-2])
        if score - second < policy.margin:
            return no("margin")
    if ood is not None and policy.ood is not None:
        limit = policy.ood.class_thresholds.get(label, policy.ood.threshold)
        if not math.isfinite(ood) or ood > limit:
            return no("out_of_distribution")
    if label in policy.refused_labels:
        return no("refused")
    if policy.accept is not None and label not in policy.accept:
        return no("not_in_accept_list")
    return Verdict(label, score, True, ood, "accepted")


class JudgedModel(Protocol):
    """What the engine needs of a loaded model (the daemon's ModelSpec)."""

    sha256: str
    labels: tuple[str, ...]
    point: OperatingPoint | None


class DecisionEngine:
    """The daemon's policies: one per (loaded model, region), resolved when first asked for
    a model and kept until another model is loaded (a reload swaps the model; frames still
    in flight keep being judged by the policy of the model that classified them).

    A model is its network *and* its operating point: `coral-train retune` ships the same
    network (same sha256) with new thresholds, so a cached policy is used only while the
    model's point is the very object it was resolved from."""

    def __init__(self, config: DecisionSettings | None = None,
                 regions: Sequence[Any] = ()):
        self.config = config
        self.regions = {r.name: r for r in regions}
        self._policies: dict[tuple[str, str], tuple[OperatingPoint | None, Policy]] = {}
        self._scenes: dict[str, EmptyScene] = {}  # per region: the empty slot's look
        self.foreign = bool(getattr(config, "foreign_object", False))

    def policy(self, model: JudgedModel, roi: str = "") -> Policy:
        key = (model.sha256, roi)
        found = self._policies.get(key)
        if found is None or found[0] is not model.point:
            if len(self._policies) > 4 * (len(self.regions) + 1):
                self._policies.clear()  # models come and go on reloads; keep a handful
            policy = resolve_policy(model.point or OperatingPoint(), self.config,
                                    self.regions.get(roi))
            found = self._policies[key] = (model.point, policy)
        return found[1]

    def judge(self, model: JudgedModel, roi: str, outputs: Sequence[np.ndarray],
              image: np.ndarray | None = None) -> Verdict:
        """The frame's verdict; with the camera's image, an "empty" frame whose scene is
        not the empty slot's is a foreign object (device.scene), not an empty slot."""
        verdict = judge(self.policy(model, roi), model.labels, outputs)
        if image is None or not self.foreign or verdict.reason != "background":
            return verdict
        scene = self._scenes.get(roi)
        if scene is None:
            c = self.config
            scene = self._scenes[roi] = EmptyScene(c.foreign_threshold, c.foreign_pixel_delta)
        region = self.regions.get(roi)
        if scene.is_foreign(crop(image, region) if region is not None else image):
            return dataclasses.replace(verdict, reason="foreign_object")
        return verdict
