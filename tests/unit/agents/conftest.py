from __future__ import annotations

import pytest

from streams.core.knowledge.knowledge import Knowledge
from streams.metrics import PipelineMetrics
from tests.unit.agents.support import fresh_metrics


@pytest.fixture(scope="session")
def kb() -> Knowledge:
    return Knowledge.load()


@pytest.fixture()
def metrics() -> PipelineMetrics:
    return fresh_metrics()
