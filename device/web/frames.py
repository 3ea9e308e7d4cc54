"""The labelling page's store: frames saved under <state>/dataset/<label>/ (captures, and
frames a person labelled) and <state>/doubtful/ (kept automatically).

A frame's id is its path relative to the state folder ("dataset/10000_vnd/x.jpg",
"doubtful/x.jpg"); every id is checked to stay inside those two folders. Labelling moves
a frame (its JPEG, JSON sidecar and model view) into dataset/<label>/, rejecting moves it
into dataset/_rejected/ (kept out of training and of `make collect`), deleting removes it.

A label must be one of the model's classes or a class folder already in the dataset: a
typo ("1000_vnd") would otherwise become a new class folder and a new class at the next
training. A new class is made only when asked for by name (action ``new_class``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.daemon.capture import REJECTED, check_label, sidecars

_ID = re.compile(r"^(dataset/(?!\.)[A-Za-z0-9_.-]{1,64}|doubtful)/(?!\.)[A-Za-z0-9_.-]{1,200}"
                 r"\.jpg$")
MAX_LIST = 500


ACTIONS = ("label", "new_class", "reject", "delete")


class FrameStore:
    def __init__(self, state_dir: Path, labels: Callable[[], list[str]] | None = None):
        """``labels``: the running model's classes (None: any well-formed name is taken)."""
        self.root = state_dir
        self.dataset = state_dir / "dataset"
        self.doubtful = state_dir / "doubtful"
        self.labels = labels

    def classes(self) -> list[str]:
        """The classes a frame may be labelled with: the model's, then class folders the
        dataset already has (made by a capture or an explicit new class)."""
        known = list(self.labels()) if self.labels is not None else []
        if self.dataset.is_dir():
            known += sorted(d.name for d in self.dataset.iterdir() if d.is_dir()
                            and d.name[0] not in "._" and d.name not in known)
        return known

    def _check_class(self, label: str) -> None:
        if self.labels is None or label in self.classes():
            return
        shown = ", ".join(self.classes()[:12])
        raise ValueError(f"{label!r} is not one of the model's classes ({shown}): pick one, "
                         "or ask for a new class explicitly (action new_class)")

    def path(self, frame_id: str) -> Path:
        """The JPEG of a frame id, or ValueError for anything outside the store."""
        if not isinstance(frame_id, str) or not _ID.match(frame_id) or ".." in frame_id:
            raise ValueError(f"not a frame id: {str(frame_id)[:80]!r}")
        path = self.root / frame_id
        if not path.is_file():
            raise FileNotFoundError(f"no frame {frame_id}")
        return path

    def _root_of(self, jpg: Path) -> Path:
        return self.doubtful if jpg.parent == self.doubtful else self.dataset

    def list(self) -> list[dict[str, Any]]:
        """Newest first: every saved frame with its label, source and sidecar."""
        found = []
        if self.doubtful.is_dir():
            found += [(p, "doubtful", "") for p in self.doubtful.glob("*.jpg")]
        if self.dataset.is_dir():
            for d in self.dataset.iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    found += [(p, "dataset", d.name) for p in d.glob("*.jpg")]
        found.sort(key=lambda t: t[0].name, reverse=True)
        out = []
        for path, source, label in found[:MAX_LIST]:
            try:
                side = json.loads(path.with_suffix(".json").read_text())
            except (OSError, ValueError):
                side = {}
            out.append({"id": path.relative_to(self.root).as_posix(), "source": source,
                        "label": label, "reason": side.get("reason", ""),
                        "top_k": side.get("top_k", []), "ts": side.get("ts"),
                        "model": side.get("model", {}).get("version", "")})
        return out

    def _move(self, jpg: Path, label: str) -> str:
        src_root = self._root_of(jpg)
        target = self.dataset / label
        if jpg.parent == target:
            return jpg.relative_to(self.root).as_posix()
        dest = (target / jpg.name, target / f"{jpg.stem}.json",
                self.dataset / ".model" / label / f"{jpg.stem}.png")
        for src, dst in zip(sidecars(jpg, src_root), dest, strict=True):
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                src.replace(dst)
        return dest[0].relative_to(self.root).as_posix()

    def apply(self, action: str, ids: list[str], label: str = "") -> dict[str, Any]:
        """label / new_class / reject / delete the frames `ids`; returns the new ids.

        ``label`` takes a known class only (see ``classes()``); ``new_class`` makes the
        class folder ``label`` when it does not exist yet.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_LIST:
            raise ValueError(f"ids must be a list of 1 to {MAX_LIST} frame ids")
        if action in ("label", "new_class"):
            check_label(label)
            if label.startswith("_"):
                raise ValueError(f"{label!r}: names starting with '_' are the page's own "
                                 "folders (_unlabelled, _rejected), not classes")
            if action == "label":
                self._check_class(label)
        paths = [self.path(i) for i in ids]  # all valid before anything moves
        done = []
        for jpg in paths:
            if action == "delete":
                for f in sidecars(jpg, self._root_of(jpg)):
                    f.unlink(missing_ok=True)
                done.append(None)
            else:
                done.append(self._move(jpg, REJECTED if action == "reject" else label))
        return {"ok": True, "action": action, "ids": done}
