"""The dashboard in a real headless Chromium while a real batch runs against the real microservice."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from seldon_batch_tx.options import default_output_path
from tests.servers import REPO_ROOT, SeldonServer
from tests.test_daemon_real import Daemon, wait_for, write_lines

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO_ROOT / "test-artifacts"
HOSTILE = '<img src=x onerror="window.__pwned=1">.txt'


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def row_text(driver: webdriver.Chrome, name: str) -> dict[str, Any]:
    """The visible cells of the row showing batch ``name`` (empty when not there yet)."""
    rows = driver.execute_script("""
        return Array.from(document.querySelectorAll('#batch-rows tr[data-batch-id]')).map(function (tr) {
          return {name: tr.querySelector('td.name').textContent,
                  percent: tr.querySelector('.percent').textContent,
                  state: tr.querySelector('.state').textContent};
        });""")
    return next((r for r in rows if r["name"] == name), {})


def page_figures(driver: webdriver.Chrome) -> dict[str, Any]:
    """What the batch page shows of percentiles, charts, timing and downloads."""
    return driver.execute_script("""
        function text(selector) { var n = document.querySelector(selector); return n ? n.textContent : null; }
        var chart = document.querySelector('#chart-throughput svg');
        return {p50: text('[data-field=p50]'), p95: text('[data-field=p95]'), p99: text('[data-field=p99]'),
                points: chart ? Number(chart.getAttribute('data-points')) : 0,
                top: text('#chart-throughput svg text.top'),
                error_chart: document.querySelector('#chart-errors svg path.line') !== null,
                projected: text('[data-field=projected_total]'), running: text('[data-field=benchmark]'),
                links: Array.from(document.querySelectorAll('#downloads a')).map(function (a) { return a.href; })};""")


def download_from_page(driver: webdriver.Chrome, kind: str) -> dict[str, Any] | None:
    """Follow the page's download link of ``kind`` from the page itself (None while there is none)."""
    return driver.execute_async_script("""
        var done = arguments[arguments.length - 1], link = document.querySelector('#downloads a[data-download="'
            + arguments[0] + '"]');
        if (!link) { done(null); return; }
        fetch(link.href).then(function (r) {
          return r.text().then(function (body) {
            done({href: link.href, body: body, disposition: r.headers.get('content-disposition')});
          });
        }, function () { done(null); });""", kind)


def test_dashboard_updates_live_in_chromium(tmp_path: Path, seldon_server: SeldonServer,
                                            daemons: list[Daemon], browser: webdriver.Chrome) -> None:
    """While a slow batch runs, the list's progress changes without a reload (the token from ?token= is
    passed on to the API), the batch page shows latency percentiles, the whole-run throughput and error charts
    and the projected total while it runs, then the benchmark line and download links (the output downloads
    from the page); a hostile file name shows as text."""
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1",
                                              "--batch-interval", "0.03", "--dashboard-token", "t0k3n"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = watch / "incoming"
    write_lines(incoming / f".{HOSTILE}.part", 5)
    os.rename(incoming / f".{HOSTILE}.part", incoming / HOSTILE)
    write_lines(incoming / ".slow.txt.part", 300)
    os.rename(incoming / ".slow.txt.part", incoming / "slow.txt")
    wait_for(lambda: (watch / "processing" / "slow.txt").exists(), 15, "slow.txt to start")

    base = f"http://127.0.0.1:{daemon.port}"
    browser.get(f"{base}/?token=t0k3n")
    browser.execute_script("window.__sameDocument = 'yes';")
    first = wait_for(lambda: row_text(browser, "slow.txt").get("state") == "running" and row_text(browser, "slow.txt"),
                     10, "slow.txt running on the page")
    changed = wait_for(lambda: (r := row_text(browser, "slow.txt")) and r["percent"] != first["percent"] and r,
                       15, "the progress to change without a reload")
    assert float(changed["percent"].rstrip("%")) > float(first["percent"].rstrip("%"))
    assert browser.execute_script("return window.__sameDocument;") == "yes"  # no reload happened
    assert browser.find_element(By.ID, "live").text == "live"
    assert row_text(browser, HOSTILE)["name"] == HOSTILE  # shown as text ...
    assert browser.execute_script("return window.__pwned === undefined;")  # ... never run as markup
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - touching it is the check
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-index.png"))

    batch_id = browser.find_element(By.CSS_SELECTOR, "#batch-rows tr[data-batch-id] td.name a").get_attribute("href")
    assert batch_id and "token=t0k3n" in batch_id
    browser.get(batch_id)
    done_before = browser.find_element(By.CSS_SELECTOR, "[data-field=done]").text
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "[data-field=done]").text != done_before, 10,
             "the batch page's count to change")
    figures = wait_for(lambda: (f := page_figures(browser)) and f["p99"] != "\u2013" and f["points"] >= 2
                       and f["projected"] != "\u2013" and f, 10, "percentiles, the charts and the projected total")
    p50, p95, p99 = (float(figures[k]) for k in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99 < 1000  # ms, against a loopback model
    assert figures["error_chart"] and figures["top"].endswith("lines/s") and float(figures["top"].split()[1]) > 0
    assert figures["running"].startswith(tuple("0123456789")) and " of ~" in figures["running"]
    assert figures["links"] == []  # nothing to download while it runs
    browser.save_screenshot(str(ARTIFACTS / "dashboard-batch.png"))
    assert (ARTIFACTS / "dashboard-index.png").stat().st_size > 10_000

    downloaded = wait_for(lambda: download_from_page(browser, "output"), 40, "the output's download link")
    output = watch / "done" / os.path.basename(default_output_path("slow.txt"))
    assert downloaded["body"] == output.read_text() and downloaded["body"].count("\n") == 300
    assert downloaded["disposition"] == f"attachment; filename=\"{output.name}\"; filename*=UTF-8''{output.name}"
    assert "token=t0k3n" in downloaded["href"]
    summary = json.loads(download_from_page(browser, "summary")["body"])
    assert summary["lines"] == 300 and summary["output"] == str(output)
    assert browser.find_element(By.CSS_SELECTOR, "[data-field=benchmark]").text.startswith("Benchmark: elapsed time")

    code, body = daemon.get("/api/batches?token=t0k3n")
    assert code == 200 and any(b["name"] == "slow.txt" for b in json.loads(body)["batches"])
    assert daemon.get("/api/batches")[0] == 401
    daemon.stop()


def test_tokenless_dashboard_with_undecodable_name_and_hostile_id_in_chromium(
        tmp_path: Path, seldon_server: SeldonServer, daemons: list[Daemon], browser: webdriver.Chrome) -> None:
    """A file whose name is not UTF-8, run under a sidecar batch id with quotes, a slash and markup:
    the list shows the name with its bytes as \\xNN, the link opens the batch page, and that page keeps
    updating live (its polls of the API by the batch's public id answer 200)."""
    watch = tmp_path / "watch"
    daemon = Daemon(tmp_path, seldon_server, ["--watch-dir", str(watch), "--poll-interval", "0.2", "-w", "1",
                                              "--batch-interval", "0.03"])
    daemons.append(daemon)
    daemon.wait_ready()
    incoming = bytes(watch / "incoming")
    name = b"slow-\xff\xfe.txt"
    write_lines(Path(os.fsdecode(incoming + b"/." + name + b".part")), 300)
    with open(incoming + b"/" + name + b".json", "w") as f:
        json.dump({"batch-id": 'id "q" a/b <img src=x onerror="window.__pwned=1">'}, f)
    os.rename(incoming + b"/." + name + b".part", incoming + b"/" + name)
    shown = "slow-\\xff\\xfe.txt"

    browser.get(f"http://localhost:{daemon.port}/")
    wait_for(lambda: row_text(browser, shown).get("state") == "running", 15, "the undecodable name on the page")
    link = browser.find_element(By.CSS_SELECTOR, "#batch-rows tr[data-batch-id] td.name a").get_attribute("href")
    assert link
    browser.get(link)
    assert browser.find_element(By.ID, "batch-name").text == shown
    done_before = browser.find_element(By.CSS_SELECTOR, "[data-field=done]").text
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "[data-field=done]").text != done_before, 10,
             "the batch page's count to change")
    assert browser.find_element(By.ID, "live").text == "live"
    assert browser.execute_script("return window.__pwned === undefined;")
    daemon.stop()
