"""`weirflow ops grafana`: a dashboard whose queries are valid PromQL over weirflow's metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from promtool_helpers import PROMTOOL
from typer.testing import CliRunner

from weirflow.cli import app
from weirflow.metrics import names


def test_dashboard_has_job_and_operator_variables_and_valid_queries(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["ops", "grafana"])
    assert done.exit_code == 0, done.output
    model = json.loads(done.output)
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "operator"}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["operator"]["multi"] and variables["operator"]["includeAll"]
    assert "job" in variables["job"]["query"] and "$job" in variables["operator"]["query"]

    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert {p["type"] for p in panels} == {"timeseries"}
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert all('job="$job"' in e for e in exprs)
    assert any('operator=~"$operator"' in e for e in exprs)
    known = {
        v + suffix
        for k, v in vars(names).items()
        if k.isupper() and isinstance(v, str) and v.startswith("weirflow_")
        for suffix in ("", "_total", "_bucket")
    }
    used = {m for e in exprs for m in re.findall(r"\bweirflow_[a-z0-9_]+", e)}
    assert used <= known, used - known
    for metric in (names.SPLIT_LAG, names.DEAD_LETTERS_BY_ERROR, names.END_TO_END_LATENCY):
        assert any(metric in u for u in used), metric
    # no panel hides another
    cells = set()
    for p in model["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))

    if PROMTOOL is None and not os.environ.get("CI"):
        pytest.skip("promtool (Debian: prometheus) checks the PromQL")
    assert PROMTOOL is not None, "CI installs promtool (.ci/run)"
    concrete = [
        e.replace("$__rate_interval", "1m").replace("$operator", ".*").replace("$job", "j")
        for e in exprs
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:q{i}", "expr": e} for i, e in enumerate(concrete)],
            }
        ]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
