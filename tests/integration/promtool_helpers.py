"""Scraping a real job's /metrics into a `promtool test rules` file, and running promtool.

Each scrape becomes one step of the test's series (``interval``, 1 minute by
default): the rules' ranges and ``for`` durations are read in scrapes, so a
job scraped every 200 ms exercises five-minute rules in seconds. Gauges in
seconds (checkpoint age, latency) keep their real values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from scraping import Labels, Samples

PROMTOOL = shutil.which("promtool")


def _series_name(name: str, labels: Labels) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def input_series(scrapes: list[Samples | None]) -> list[dict[str, str]]:
    """promtool ``input_series``: one step per scrape, ``_`` where a series was absent."""
    keys = sorted({k for s in scrapes if s for k in s})
    out = []
    for name, labels in keys:
        values = [repr(s[(name, labels)]) if s and (name, labels) in s else "_" for s in scrapes]
        out.append({"series": _series_name(name, labels), "values": " ".join(values)})
    return out


def render(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it (only ``{{ $labels.NAME }}`` is used here)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def expected_alert(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """promtool's ``exp_alerts`` entry for ``rule`` firing with the expression's ``labels``."""
    return {
        "exp_labels": {**labels, **rule.get("labels", {})},
        "exp_annotations": {k: render(v, labels) for k, v in rule["annotations"].items()},
    }


def promtool_test(
    tmp: Path,
    rules_file: Path,
    series: list[dict[str, str]],
    checks: list[tuple[int, str, list[dict[str, str]]]],
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool test rules``: at step ``i`` exactly ``alerts`` of ``alertname`` fire.

    Args:
        tmp: where to write the test file.
        rules_file: the rule file under test.
        series: from :func:`input_series`.
        checks: ``(step, alertname, [expression labels of each firing alert])``.
    """
    rules = {
        r["alert"]: r
        for g in yaml.safe_load(rules_file.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": f"{step}m",
                        "alertname": name,
                        "exp_alerts": [expected_alert(rules[name], lb) for lb in labels],
                    }
                    for step, name, labels in checks
                ],
            }
        ],
    }
    path = tmp / "alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
