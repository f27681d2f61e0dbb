from pathlib import Path

import pytest

from kit.synth import generate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic ``tiny`` preset (seed 0), generated once for every test that reads it; read-only but
    for the statistics cache (``kit_stats.json``) that training writes into dataset roots."""
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate(root, preset="tiny", seed=0, workers=1, progress=False)
    return root
