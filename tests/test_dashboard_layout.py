"""The dashboard's list at 1400 px in a real headless Chromium (issue 23): no cell overflows and the page does
not scroll sideways (the Files column is whole), a long name is one line ending in an ellipsis with the whole
name on hover, a short name is never broken mid-word, and times under a minute show tenths of a second.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from selenium import webdriver

from tests.servers import SeldonServer
from tests.test_daemon_real import Daemon, wait_for, write_lines
from tests.test_dashboard_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture

LONG = "nightly-export-of-the-customer-scoring-features-for-the-iris-model-2026-12-05-part-0001.txt"
NAMES = ("sample.txt", LONG, "backfill.jsonl")

LAYOUT = """
    var cells = Array.from(document.querySelectorAll('table.batches th, table.batches td'));
    var wrap = document.querySelector('.table-wrap') || document.querySelector('table.batches');
    return {
      viewport: window.innerWidth,
      page: document.documentElement.scrollWidth,
      table_right: document.querySelector('table.batches').getBoundingClientRect().right,
      wrap_scrolls: wrap.scrollWidth > wrap.clientWidth + 1,
      overflowing: cells.filter(function (c) { return c.scrollWidth > c.clientWidth + 1; })
                        .map(function (c) { return c.className + ': ' + c.textContent.slice(0, 40); }),
      names: Array.from(document.querySelectorAll('#batch-rows td.name a')).map(function (a) {
        var style = getComputedStyle(a);
        return {text: a.textContent, title: a.title, lines: Math.round(a.getBoundingClientRect().height /
                parseFloat(style.lineHeight)), clipped: a.scrollWidth > a.clientWidth,
                ellipsis: style.textOverflow};
      }),
      elapsed: Array.from(document.querySelectorAll('#batch-rows tr[data-batch-id]')).map(function (tr) {
        return tr.children[8].textContent; }),
      files: Array.from(document.querySelectorAll('#batch-rows td.files a')).length
    };"""


def test_batch_list_fits_1400_px_with_ellipsized_names(tmp_path: Path, seldon_server: SeldonServer,
                                                      daemons: list[Daemon], browser: webdriver.Chrome) -> None:  # noqa: F811
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "2",
                                              "--benchmark"])
    daemons.append(daemon)
    daemon.wait_ready()
    for name in NAMES:
        write_lines(watch / "incoming" / f".{name}.part", 40)
        os.rename(watch / "incoming" / f".{name}.part", watch / "incoming" / name)
    wait_for(lambda: all((watch / "done" / f"{n}.summary.json").exists() for n in NAMES), 60, "every file done")

    browser.set_window_size(1400, 1000)
    browser.get(f"http://127.0.0.1:{daemon.port}/")
    layout: dict[str, Any] = wait_for(lambda: (got := browser.execute_script(LAYOUT))["files"] >= 2 * len(NAMES)
                                      and len(got["names"]) == len(NAMES) and got, 15, "the rows with downloads")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-1400.png"))
    assert layout["viewport"] <= 1400 and layout["page"] <= layout["viewport"], layout
    assert layout["table_right"] <= layout["viewport"] and not layout["wrap_scrolls"], layout
    assert layout["overflowing"] == [], layout
    names = {n["text"]: n for n in layout["names"]}
    assert set(names) == set(NAMES)
    for name in NAMES:
        assert names[name]["title"] == name and names[name]["lines"] == 1, names[name]  # one line, never broken
    assert names[LONG]["clipped"] and names[LONG]["ellipsis"] == "ellipsis"
    assert not names["sample.txt"]["clipped"]
    assert all(re.fullmatch(r"\d{1,2}\.\d s", text) for text in layout["elapsed"]), layout["elapsed"]
