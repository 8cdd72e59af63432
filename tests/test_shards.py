"""The shard runner's split: measured times balance the shards; unmeasured files are estimated."""

from __future__ import annotations

import json

import pytest

from tests import shards


def test_measured_times_drive_the_balance(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ROOT", tmp_path)
    files = []
    for name in ("a", "b", "c", "d"):
        path = tmp_path / "tests" / f"test_{name}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text("x = 1\n")
        files.append(path)
    measured = {"tests/test_a.py": 100.0, "tests/test_b.py": 60.0, "tests/test_c.py": 40.0,
                "tests/test_d.py": 10.0}  # fmt: skip
    groups = shards.assign(files, measured=measured)
    # Longest first: a | b, then c and d onto the lighter side: 100 + 10 | 60 + 40.
    assert [sorted(p.name for p in g) for g in groups] == [
        ["test_a.py", "test_d.py"],
        ["test_b.py", "test_c.py"],
    ]


def test_an_unmeasured_file_is_costed_by_size_in_measured_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ROOT", tmp_path)
    (tmp_path / "tests").mkdir()
    small, big = tmp_path / "tests" / "test_small.py", tmp_path / "tests" / "test_big.py"
    small.write_text("x" * 1000)
    big.write_text("x" * 3000)
    costs = shards._costs([small, big], {"tests/test_small.py": 20.0})
    assert costs == {small: 20.0, big: pytest.approx(60.0)}


def test_record_sums_junit_times_by_file(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "ROOT", tmp_path)
    monkeypatch.setattr(shards, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(shards, "TIMES", tmp_path / "times.json")
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "sub" / "test_x.py").write_text("")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "shard0.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.sub.test_x" name="test_one" time="1.25"/>'
        '<testcase classname="tests.sub.test_x.TestGroup" name="test_two" time="2.5"/>'
        '<testcase classname="tests.gone.test_y" name="test_three" time="9"/>'
        "</testsuite></testsuites>"
    )
    assert shards.record() == 0
    assert json.loads((tmp_path / "times.json").read_text()) == {"tests/sub/test_x.py": 3.8}


@pytest.mark.parametrize(("classname", "expected"), [("tests.sub.test_x", "tests/sub/test_x.py"),
                                                     ("nowhere.test_z", None)])  # fmt: skip
def test_test_file_resolution(tmp_path, monkeypatch, classname, expected):
    monkeypatch.setattr(shards, "ROOT", tmp_path)
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "sub" / "test_x.py").write_text("")
    assert shards._test_file(classname) == expected
