"""Headless Chromium loads the dashboard of a running job: the job graph and a completed checkpoint.

Needs the Debian packages ``chromium`` and ``chromium-driver``. Set
``WEIRFLOW_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recovery"))

from chaos_helpers import JOB, make_input
from test_dashboard_workers import OPERATORS, N, write_input

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian packages chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(port: int, path: str) -> object | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


#: The text of every cell of the table whose id is the script's argument, row by row.
CELLS = (
    "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
    ".map((tr) => [...tr.cells].map((td) => td.textContent));"
)


def chrome_options(tmp_path: Path) -> Any:
    """Options of a headless Chromium, its background networking, updates and sync off."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    return options


def end(driver: Any, proc: subprocess.Popen[bytes], run_log: Path) -> None:
    """Close the browser, if open, and stop the job (SIGTERM), which must end cleanly."""
    if driver is not None:
        driver.quit()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, run_log.read_text()


def test_dashboard_shows_the_job_graph_and_a_completed_checkpoint(tmp_path: Path) -> None:
    """Scenario: a browser opens the dashboard of a job that is running and checkpointing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log_dir = tmp_path / "log"
    make_input(log_dir, 60_000, seed=3)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weirflow.cli",
            "run",
            JOB,
            "--parallelism=2",
            f"--checkpoint-dir={tmp_path / 'chk'}",
            "--checkpoint-interval=300ms",
            f"--ui-port={port}",
        ],
        env=dict(os.environ, WF_LOG_DIR=str(log_dir), WF_THROTTLE_US="300"),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
    )
    options = chrome_options(tmp_path)
    driver = None
    try:
        deadline = time.monotonic() + 60
        while not api(port, "/api/checkpoints"):
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "no completed checkpoint on the dashboard"
            time.sleep(0.1)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#graph g.node"))
        nodes = {
            n.get_attribute("data-operator")
            for n in driver.find_elements(By.CSS_SELECTOR, "#graph g.node")
        }
        assert nodes == {"events", "parse", "per_user", "results"}
        assert len(driver.find_elements(By.CSS_SELECTOR, "#graph rect.chain")) == 2
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#checkpoints tbody span.completed"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#lag tbody tr"))
        operators = driver.find_element(By.ID, "operators").text
        assert "per_user" in operators and "window" in operators
        assert "in " in driver.find_element(By.ID, "progress").text
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("WEIRFLOW_DASHBOARD_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
    finally:
        end(driver, proc, tmp_path / "run.log")


def test_dashboard_of_a_job_on_workers_shows_its_operators_and_connectors(
    tmp_path: Path,
) -> None:
    """Scenario: a browser opens the dashboard of a job on 2 worker processes that has read
    its input: the operator table has a row per operator with the workers' counts, the
    connector table a row per sink subtask."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log_dir = tmp_path / "log"
    write_input(log_dir)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "weirflow.cli", "run", str(Path(__file__).parent / "jobs" /
         "running_counts.py"), "--parallelism=2", "--workers=2",
         f"--checkpoint-dir={tmp_path / 'chk'}", "--checkpoint-interval=300ms",
         f"--ui-port={port}"],
        env=dict(os.environ, WF_LOG_DIR=str(log_dir)),
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    driver = None
    try:
        deadline = time.monotonic() + 120
        # every operator has counted every record in the workers' heartbeats
        while [o["records_in"] for o in api(port, "/api/operators") or []] != [N] * 4:  # type: ignore[attr-defined]
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "the operators' counts never reached the input"
            time.sleep(0.2)
        driver = webdriver.Chrome(
            options=chrome_options(tmp_path), service=Service(executable_path=DRIVER)
        )
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#operators tbody tr")) == 4)
        # read in one script: the page refills the table every second, which would leave
        # elements found one by one stale
        rows = driver.execute_script(CELLS, "operators")
        assert [r[0] for r in rows] == OPERATORS
        assert all(r[2] == "2" for r in rows), rows  # parallelism
        assert all(r[5] == f"{N:,}" for r in rows), rows  # the "in" column
        # backpressure, buffers and watermark: not measured on workers, shown as such
        assert all(r[10:] == ["-"] * 4 for r in rows), rows
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#connectors tbody tr")) == 2)
        connectors = driver.execute_script(CELLS, "connectors")
        assert [c[:3] for c in connectors] == [["out", "0", "closed"], ["out", "1", "closed"]]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#workers tbody tr")) == 2)
    finally:
        end(driver, proc, tmp_path / "run.log")
