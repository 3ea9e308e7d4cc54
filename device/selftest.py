"""The golden self-test: a bundle's sample images must give their expected top-1 on the
backend that will serve them, at start and at every reload, before a model serves."""

from __future__ import annotations

from pathlib import Path

from device.bundle import Bundle
from device.errors import ModelError
from device.images import decode_image


def self_test(clf, bundle: Bundle) -> int:
    """Classify every golden sample; ModelError naming the first one that disagrees.

    Returns how many samples were checked.
    """
    golden = bundle.manifest.get("golden", []) if isinstance(bundle.manifest, dict) else []
    for g in golden:
        path = Path(bundle.root) / g["file"]
        image = decode_image(path)
        if image is None:
            raise ModelError(f"golden sample {path} cannot be read as an image")
        got = clf.classify(image).best
        if got is None or got.label != g["label"]:
            raise ModelError(f"self-test failed: golden sample {g['file']} gave "
                             f"{got.label if got else None!r}, expected {g['label']!r}")
    return len(golden)
