"""Shared fixtures. Area-specific fixtures live in their own test files or carry the area's prefix."""

from __future__ import annotations

import os
import tempfile

import pytest

# Set before `datasets` is imported anywhere: tests never reach a hub (fail fast instead of
# hanging on a resolve) and never write into the user's cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
_CACHE = tempfile.mkdtemp(prefix="fusionrs-test-cache-")
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_CACHE, "datasets"))
os.environ.setdefault("HF_HOME", os.path.join(_CACHE, "home"))

SMALL_COUNTS = {"train": 9, "validation": 4, "test": 4}
SAMPLE_SHARDS = 25
"""Shards of ``sample_repo`` (rc4 layout, 4 rows a shard): per source, train 3 IR-aware rows (1 shard) + 6 base
(2), validation 4 base (1), test 4 base (1); 5 x 5."""


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory):
    """A small complete repo (5 sources x 3 splits, both groups, several shards per split). Read-only."""
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("sample") / "repo", counts=SMALL_COUNTS, size=64, max_rows=4)


@pytest.fixture(autouse=True)
def _pil_registry():
    """``fusionrs_hf.load`` and the loading script unregister PIL's EPS opener for the whole process (see
    ``fusionrs_hf.limits.refuse_external_decoders``): each test gets PIL's registry back as it found it."""
    from PIL import Image

    Image.init()
    opened, ids = dict(Image.OPEN), list(Image.ID)
    yield
    Image.OPEN.clear()
    Image.OPEN.update(opened)
    Image.ID[:] = ids


@pytest.fixture(scope="module")
def script():
    """``loading_script/fusionrs.py`` imported as a module: it stands alone (no fusionrs_hf import), so its own
    copies of the rules are tested through it."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "loading_script" / "fusionrs.py"
    spec = importlib.util.spec_from_file_location("fusionrs_loading_script", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # datasets re-imports the builder's module by name for streaming
    spec.loader.exec_module(mod)
    return mod
