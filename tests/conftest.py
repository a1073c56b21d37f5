import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests run beside each other on small machines

REAL_DATA = Path(os.environ.get("BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def real_data_dir() -> Path:
    if not (REAL_DATA / "hirise-v1").is_dir():
        pytest.skip(f"real data not found in {REAL_DATA}")
    return REAL_DATA
