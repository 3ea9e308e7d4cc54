"""The open world of a training run: the class list with its background class, crops and
mined negatives from --boxes, folder negatives, and outlier exposure with real notes that
are not ours (--other-exposure)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from host_training.train.dataset import Dataset
from host_training.train.samples import (
    FOREIGN,
    MINED,
    Pool,
    load_negatives,
    mine,
    read_boxes,
    split_pool,
)
from host_training.train.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class OpenSet:
    """Everything beyond the whole frames: the class list with its background class, the
    training pool (crops, mined and folder negatives) and the validation negatives."""

    class_names: tuple[str, ...]
    background: str | None
    train_pool: Pool
    val_pool: Pool


def load_open_set(s: TrainSettings, train: Dataset, val: Dataset) -> OpenSet:
    """Crops and negatives from --boxes and --negatives (none without them)."""
    names = train.class_names
    if not (s.boxes or s.negatives or s.other_exposure):
        return OpenSet(names, None, Pool.empty(), Pool.empty())
    if s.background_label not in names:
        names = (*names, s.background_label)
    bg = names.index(s.background_label)
    train_pool, val_pool = Pool.empty(), Pool.empty()
    if s.boxes:
        boxes = read_boxes(s.boxes)
        train_pool = mine(train.paths, train.labels, boxes, s.input_size, bg, s.seed)
        mined_val = mine(val.paths, val.labels, boxes, s.input_size, bg, s.seed + 1)
        # Validation keeps whole frames as its notes, and only negatives that can really
        # happen (scenes without the note): jigsaw tiles teach, but calibrating the class
        # thresholds on them would reject real notes for the sake of an impossible input.
        for i, k in enumerate(mined_val.kinds):
            if k == MINED:
                val_pool.add(mined_val.images[i], mined_val.labels[i], k, mined_val.series[i])
    if s.other_exposure:
        # outlier exposure: real notes of other currencies (the part of --other that may be
        # trained on) as background, pasted onto scenes like the crops of our notes
        from host_training.openset import other_notes

        notes = other_notes.load_other(s.other, s.input_size, names, (other_notes.TRAIN,),
                                       s.resize)
        for g in notes.images:
            if g.endswith("/" + other_notes.TRAIN):
                for img, asp in zip(notes.images[g], notes.aspects[g], strict=True):
                    train_pool.add(img, bg, FOREIGN, "other", asp)
    if s.negatives:
        neg_train, neg_val = split_pool(load_negatives(s.negatives, s.input_size, bg),
                                        s.val_split, s.seed)
        for src, dst in ((neg_train, train_pool), (neg_val, val_pool)):
            for i in range(len(src)):
                dst.add(src.images[i], src.labels[i], src.kinds[i], src.series[i])
    log.info("open set: train pool %s | validation negatives %d",
             {k: train_pool.kinds.count(k) for k in sorted(set(train_pool.kinds))},
             len(val_pool))
    return OpenSet(names, s.background_label, train_pool, val_pool)
