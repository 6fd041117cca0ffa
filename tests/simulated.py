"""Declaring a simulator fixture in one line: `sim = simulator_fixture("sim", recordings=20)`."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.simulator import Simulator


def simulator_fixture(name: str, **settings: Any):
    """A fixture called `name`: a Simulator(**settings), listening for one test, then stopped."""

    @pytest.fixture(name=name)
    def running():
        with Simulator(**settings) as simulator:
            yield simulator

    running.__doc__ = f"A simulator with {settings}, for one test."
    return running
