"""Logs under systemd: every line, tracebacks included, carries its syslog priority."""

from __future__ import annotations

import logging

from device.__main__ import JournalFormatter


def test_journal_formatter_keeps_tracebacks_with_their_priority():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("device.x", logging.ERROR, __file__, 1, "it failed", (),
                                   __import__("sys").exc_info())
    lines = JournalFormatter().format(record).splitlines()
    assert lines[0] == "<3>device.x: it failed"
    assert any("ValueError: boom" in ln for ln in lines[1:])
    assert all(ln.startswith("<3>") for ln in lines)
