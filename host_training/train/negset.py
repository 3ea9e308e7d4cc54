"""The negative evaluation set: images that are none of the banknotes, from sources that
share nothing with the training photos, to measure how often a bundle accepts them.

Sources (all installed with the `train` extra or shipped beside the project; nothing is
downloaded and nothing is copied into the repository):

- ``photos/``: scikit-image's bundled sample images (``skimage/data``: astronaut, cat,
  coffee, rocket, coins, horse, a page of text, textures, …; public domain / CC0, see
  skimage/data/README.txt), scikit-learn's two sample photos (``china.jpg``,
  ``flower.jpg``; CC BY 2.0, see sklearn/datasets/images/README.txt) and Coral's test
  photos in ../shared/images/coral (parrot, cat, bird; Apache-2.0), each as the whole image
  and `views - 1` random crops.
- ``faces/``: scikit-image's ``lfw_subset`` faces (Labeled Faces in the Wild), upscaled: a
  person in front of the camera without a note.
- ``foreign_notes/``: device.tools.synthetic's notes (coloured notes with a pattern on a
  slot background): note-shaped things the model was never taught.
- ``empty_slot/``: device.tools.synthetic's slot with nothing in it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from device.images import decode_image

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
CORAL_IMAGES = ROOT.parent / "shared" / "images" / "coral"
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "chessboard_RGB.png",
    "clock_motion.png", "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png",
    "horse.png", "hubble_deep_field.jpg", "ihc.png", "logo.png", "moon.png",
    "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)


def _views(rgb: np.ndarray, views: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The whole image and views-1 random crops (40-90 % of each side)."""
    out = [rgb]
    h, w = rgb.shape[:2]
    for _ in range(views - 1):
        ch, cw = int(h * rng.uniform(0.4, 0.9)), int(w * rng.uniform(0.4, 0.9))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        out.append(np.ascontiguousarray(rgb[y:y + ch, x:x + cw]))
    return out


def _write(folder: Path, name: str, rgb: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb * (255 if rgb.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])


def build_from_folders(out: Path, folders: list[Path], views: int = 3,
                       seed: int = 0) -> dict[str, int]:
    """Negatives from your own photos (e.g. wallpapers from Debian's mate-backgrounds and
    gnome-backgrounds, for training): each image under `folders` as the whole image and
    views-1 random crops, at most 640 px, under out/<folder name>/."""
    from device.images import IMAGE_SUFFIXES

    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for folder in folders:
        files = sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            rgb = decode_image(f)
            if rgb is None:
                continue
            for k, v in enumerate(_views(rgb, views, rng)):
                scale = 640 / max(v.shape[:2])
                if scale < 1:
                    v = cv2.resize(v, (round(v.shape[1] * scale), round(v.shape[0] * scale)),
                                   interpolation=cv2.INTER_AREA)
                _write(out / Path(folder).name, f"{f.stem}_{k}.jpg", v)
                counts[Path(folder).name] = counts.get(Path(folder).name, 0) + 1
    return counts


def build_negative_set(out: Path, views: int = 4, seed: int = 0, faces: int = 20,
                       synthetic: int = 18) -> dict[str, int]:
    """Write the negative set under `out` (one subfolder per group) and SOURCES.md.

    Returns the number of images per group.
    """
    import skimage
    import sklearn.datasets

    from device.tools.synthetic import EMPTY, NOTES, render

    rng = np.random.default_rng(seed)
    out = Path(out)
    sources = ["# Negative evaluation set", "", "Built by `coral-train negative-set`; "
               "none of it comes from the training photos.", "", "| file | source |",
               "|---|---|"]
    photos: list[tuple[str, np.ndarray, str]] = []
    sk_dir = Path(skimage.__file__).parent / "data"
    for name in SKIMAGE_PHOTOS:
        rgb = decode_image(sk_dir / name)
        if rgb is not None:
            photos.append((f"skimage_{Path(name).stem}", rgb,
                           f"scikit-image {skimage.__version__} data/{name}"))
    for i, img in enumerate(sklearn.datasets.load_sample_images().images):
        photos.append((f"sklearn_{i}", np.asarray(img), "scikit-learn sample image "
                       f"{sklearn.datasets.load_sample_images().filenames[i].split('/')[-1]}"))
    if CORAL_IMAGES.is_dir():
        for f in sorted(CORAL_IMAGES.iterdir()):
            rgb = decode_image(f)
            if rgb is not None:
                photos.append((f"coral_{f.stem}", rgb, f"../shared/images/coral/{f.name}"))
    else:
        log.warning("%s is absent: the negative set has no Coral photos", CORAL_IMAGES)
    counts: dict[str, int] = {}
    for stem, rgb, src in photos:
        for k, v in enumerate(_views(rgb, views, rng)):
            _write(out / "photos", f"{stem}_{k}.jpg", v)
            sources.append(f"| photos/{stem}_{k}.jpg | {src}" + (" (crop)" if k else "") + " |")
            counts["photos"] = counts.get("photos", 0) + 1
    lfw = np.load(sk_dir / "lfw_subset.npy")
    for i in rng.choice(len(lfw), min(faces, len(lfw)), replace=False):
        face = cv2.resize((lfw[i] * 255).astype(np.uint8), (224, 224),
                          interpolation=cv2.INTER_CUBIC)
        _write(out / "faces", f"lfw_{i:03d}.jpg", face)
        sources.append(f"| faces/lfw_{i:03d}.jpg | scikit-image data/lfw_subset.npy #{i} |")
        counts["faces"] = counts.get("faces", 0) + 1
    for label in NOTES:
        for k in range(max(1, synthetic // len(NOTES))):
            _write(out / "foreign_notes", f"{label}_{k}.jpg", render(label, rng, 320, 240))
            counts["foreign_notes"] = counts.get("foreign_notes", 0) + 1
    for k in range(max(1, synthetic // 3)):
        _write(out / "empty_slot", f"empty_{k}.jpg", render(EMPTY, rng, 320, 240))
        counts["empty_slot"] = counts.get("empty_slot", 0) + 1
    sources += ["| foreign_notes/* | device.tools.synthetic (note_5, note_10, note_20) |",
                "| empty_slot/* | device.tools.synthetic (empty) |"]
    (out / "SOURCES.md").write_text("\n".join(sources) + "\n")
    return counts
