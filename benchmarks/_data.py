"""Where the benchmarks find the shared FIB-25 data and Google's model.

Beside a developer's checkout it is ``../shared/data``; on the bare GPU machine, where ``../shared``
does not travel, ``benchmarks/gpu_prepare.sh`` copies what ``gpu.sh`` needs into ``.gpu/data`` and
``gpu.sh`` points ``NAPARI_CONNECTOME_SHARED_DATA`` at it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_CONNECTOME_SHARED_DATA") or ROOT.parent / "shared" / "data")
H5 = DATA / "fib25-training-sample2" / "fib25_training_sample2.h5"
GOOGLE = DATA / "google-ffn-fib25"
