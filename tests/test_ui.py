"""The MLflow UI in a real browser: Debian's Chromium driven by Playwright (.ci/run installs both)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error
from pdsweep.results import report, tracking
from test_report import ROWS

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A tracking store holding one finished sweep, as `pdsweep run` leaves it."""
    runs = tmp_path / "runs"
    ids = tracking.start_sweep(f"sqlite:///{runs / 'mlflow.db'}", "quickstart", tracking.artifact_root(runs), "hand",
                               {"search": "tpe"}, files=[])
    for row in ROWS:
        tracking.Tracker(ids).finish(row)
    tracking.end_sweep(ids)
    return runs


@pytest.mark.slow
def test_ui_shows_the_sweeps_runs_and_metrics(store: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = _free_port()
    command = [str(Path(sys.executable).parent / "pdsweep"), "ui", "--runs-dir", str(store), "--port", str(port)]
    ui = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = [ui.stdout.readline() for _ in range(3)]  # the URL, the sweep's page, its compare page
        assert lines[0].startswith(f"MLflow UI for {store}: http://127.0.0.1:{port}"), lines
        runs_url = re.search(r"(http://\S+/runs\S*)", lines[1]).group(1)
        compare_url = re.search(r"(http://\S+compare-runs\S*)", lines[2]).group(1)
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 2600, "height": 1000})  # MLflow 3's side panel is wide
            # Generous ceilings (a wait ends when the page is ready): a busy machine paints slowly.
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(runs_url)
            best = report.build("hand", ROWS).tiers[1].best.config.name
            expect(page.get_by_text(best, exact=True).first).to_be_visible(timeout=60_000)  # a trial of the sweep
            expect(page.get_by_text("Sort: best_val_accuracy")).to_be_visible()
            # Sorting by a metric is how a user shows its column: one click on the sort menu's entry.
            page.get_by_text("Sort: best_val_accuracy").click()
            page.get_by_test_id("sort-select-best_val_accuracy").first.click()
            header = page.get_by_role("columnheader", name=re.compile("best_val_accuracy")).first
            expect(header).to_be_in_viewport()
            values = page.locator("[id^='cell-metrics.`best_val_accuracy`']")
            expect(values.filter(has_text="0.85").first).to_be_attached()  # the best trial's accuracy, in that column
            page.wait_for_timeout(1000)  # let the grid paint the cells before the screenshot
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))
            page.goto(compare_url)
            expect(page.get_by_text("train_gflops").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("best_val_accuracy").first).to_be_visible()
            expect(page.get_by_text("resolution").first).to_be_visible()  # a config axis, as a param
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-compare.png"))
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C: pdsweep ui stops MLflow's server and its workers
        ui.wait(timeout=120)  # a ceiling: it stops in seconds when idle
    time.sleep(0.5)
    with socket.socket() as probe:  # nothing left listening
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_ui_on_a_port_in_use(cli, store: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(cli("ui", "--runs-dir", store, "--port", port), f"port {port} on 127.0.0.1 is in use")


def test_ui_without_a_store(cli, tmp_path: Path) -> None:
    assert_one_line_error(cli("ui", "--runs-dir", tmp_path / "nothing"), "no MLflow store at", "run a sweep first")
