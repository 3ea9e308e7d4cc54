"""A progress bar with an ETA over a Keras training phase, for a person at a terminal.

At a terminal the bar counts the phase's batches (epochs x steps, so the ETA holds from the
first epoch on) and shows the last epoch's loss and accuracy; into a file or a pipe (CI,
nohup) it logs one line per epoch instead, as bars would only fill the log with carriage
returns.
"""

from __future__ import annotations

import logging
import sys

import keras
from tqdm import tqdm


class EpochProgress(keras.callbacks.Callback):
    """Keras callback: a tqdm bar over the whole phase, or one log line per epoch."""

    def __init__(self, phase: str, log: logging.Logger, interactive: bool | None = None):
        super().__init__()
        self.phase, self.log = phase, log
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar: tqdm | None = None
        self.done = 0

    def on_train_begin(self, logs=None) -> None:
        if not self.interactive:
            return
        epochs, steps = self.params.get("epochs") or 0, self.params.get("steps") or 0
        self.bar = tqdm(total=epochs * steps or None, desc=f"{self.phase} (epoch 1/{epochs})",
                        unit="batch", leave=False, dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        self.done = epoch + 1
        line = (f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.3f} | "
                f"val_loss {logs.get('val_loss', 0):.4f} val_acc "
                f"{logs.get('val_accuracy', 0):.3f}")
        if self.bar is None:
            self.log.info("%s epoch %d: %s", self.phase, epoch + 1, line)
            return
        self.bar.set_description(f"{self.phase} (epoch {epoch + 2}/{self.params.get('epochs')})")
        self.bar.set_postfix_str(line, refresh=True)

    def on_train_end(self, logs=None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.log.info("%s: %d epochs done", self.phase, self.done)
