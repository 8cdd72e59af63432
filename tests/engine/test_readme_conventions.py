"""The engine README states each simulation behaviour next to the test that shows it.

A README that names a test which does not exist (renamed, deleted) is wrong about the engine,
so every test name it mentions must be a test function in tests/engine/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "backtester" / "engine" / "README.md"

# Issue 10 item 17: behaviours the engine had but the README did not state.
STATED_BEHAVIOURS = {
    "resting entry cancelled by its side's exit rule": (
        "test_an_exit_rule_withdraws_a_resting_entry_order"
    ),
    "new entry signal ignored while an order rests": (
        "test_a_new_entry_signal_while_an_order_rests_is_ignored_not_repriced"
    ),
    "open beyond the target wins over a later stop": (
        "test_an_open_beyond_the_target_takes_it_at_the_open_though_the_bar_then_hits_the_stop"
    ),
}


def engine_test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests" / "engine").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_the_readme_names_the_test_of_each_simulation_behaviour() -> None:
    text = README.read_text()
    section = text[text.index("## Simulation") : text.index("## Metrics")]
    for behaviour, test in STATED_BEHAVIOURS.items():
        assert f"`{test}`" in section, f"README does not state: {behaviour}"
    assert set(STATED_BEHAVIOURS.values()) <= engine_test_names()


def test_every_test_the_readme_names_exists() -> None:
    mentioned = set(re.findall(r"`(test_\w+)`", README.read_text()))
    assert mentioned
    assert mentioned - engine_test_names() == set()
