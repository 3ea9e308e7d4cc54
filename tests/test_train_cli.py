"""`coral-train` as a person meets it: help for every option, `inspect` on a bundle folder,
TensorFlow's own chatter kept off the terminal, a progress bar with an ETA per phase."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

import pytest

from .conftest import HAS_TENSORFLOW, ROOT, run_cli

DEMO = ROOT / "compiled_models" / "demo-notes"


def options(parser: argparse.ArgumentParser, name: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from options(p, sub)
        elif not isinstance(action, argparse._HelpAction):
            yield name, action


def test_every_option_has_help():
    from host_training.__main__ import build_parser

    missing = [(cmd, a.option_strings or a.dest) for cmd, a in
               options(build_parser(), "coral-train") if not (a.help or "").strip()]
    assert not missing, missing


def test_inspect_a_bundle_folder_and_a_missing_file(tmp_path):
    r = run_cli("inspect", str(DEMO), module="host_training", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "model_quant.tflite" in r.stdout and "subgraph 0" in r.stdout
    r = run_cli("inspect", str(tmp_path), module="host_training", timeout=120)
    assert r.returncode == 3 and "is it a bundle?" in r.stderr and "Errno" not in r.stderr
    r = run_cli("inspect", str(tmp_path / "nope.tflite"), module="host_training", timeout=120)
    assert r.returncode == 3 and "no such file" in r.stderr


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="needs TensorFlow (the trainer)")
def test_tensorflow_chatter_stays_off_the_terminal():
    code = ("import host_training.__main__\n"
            "import numpy as np, keras\n"
            "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
            "m.compile('adam', 'mse')\n"
            "m.fit(np.zeros((8, 4)), np.zeros((8, 2)), verbose=0, epochs=1)\n"
            "print('done')\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    for noise in ("oneDNN", "cpu_feature_guard", "absl::InitializeLog", "node_def_util",
                  "Warning"):
        assert noise not in r.stderr, r.stderr


@pytest.mark.skipif(not HAS_TENSORFLOW, reason="needs TensorFlow (the trainer)")
def test_epoch_progress_bar_with_eta_or_one_line_per_epoch(capsys, caplog):
    import keras
    import numpy as np

    from host_training.train.progress import EpochProgress

    log = logging.getLogger("host_training.test")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    x, y = np.zeros((32, 4)), np.zeros((32, 2))
    model.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[EpochProgress("head", log, interactive=True)])
    err = capsys.readouterr().err
    assert "head (epoch" in err and "<" in err and "batch" in err  # tqdm: elapsed<ETA
    assert "12/12" in err  # 3 epochs x 4 batches
    with caplog.at_level(logging.INFO, logger="host_training.test"):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0,
                  callbacks=[EpochProgress("fine-tune", log, interactive=False)])
    lines = [r.getMessage() for r in caplog.records if "fine-tune epoch" in r.getMessage()]
    assert len(lines) == 2 and "val_loss" in lines[0]
