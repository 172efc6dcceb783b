"""Shared pytest set-up: where the real datasets are."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# The tests use ../shared/data when it exists and UIUNET_DATA is not set (as .ci/run does).
if not os.environ.get("UIUNET_DATA") and (SHARED / "data").is_dir():
    os.environ["UIUNET_DATA"] = str(SHARED / "data")
os.environ.setdefault("MPLBACKEND", "Agg")


def data_dir(name: str) -> Path | None:
    "Folder of dataset `name` under UIUNET_DATA or ./data, or None."
    for base in (os.environ.get("UIUNET_DATA"), ROOT / "data"):
        if base and (Path(base) / name / "images").is_dir():
            return Path(base) / name
    return None


def needs_dataset(name: str):
    "Marks a test that needs the real dataset `name` (`-m realdata` selects them) and skips it where the dataset is missing."
    skip = pytest.mark.skipif(data_dir(name) is None,
                              reason=f"needs the real {name} dataset under UIUNET_DATA or ./data (see the guide, 'Datasets')")
    return lambda test: pytest.mark.realdata(skip(test))
