"""What the viewer's updates cost the FFN: the demo window with an update per FFN step against one
every 0.5 s (the widget's setting), run alternately in one go, one JSON line per run and a ratio.

Why: each update repaints the window on the Qt thread, and with software OpenGL (a VM or Xvfb)
that repaint holds the GIL long enough to starve the worker's FFN steps (``gui/_ffn_tasks.py``,
``run_region``). ``update_interval_s = 0`` is how the widget behaved before (one update per step).

    .venv/bin/python benchmarks/bench_demo_updates.py [--repeats 2] [--avx2]

``--avx2`` holds oneDNN to AVX2 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``), the closest this machine gets
to an AVX2-only CPU; ``auto`` then also picks fp32 as it would there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys
from napari_connectome.cli import main
from napari_connectome.gui import demo

interval = float(sys.argv[1])
configure = demo.DemoSession._configure_region


def with_interval(self, whole):
    configure(self, whole)
    self.region.update_interval_s = interval


demo.DemoSession._configure_region = with_interval
sys.exit(main(["demo", "--screenshot", sys.argv[2], "--overwrite"]))
"""

FFN_LINE = re.compile(r"([\d,]+) FFN steps in ([\d.]+) s \(estimated ([\d.]+) s\)")
WALL_LINE = re.compile(r"demo wall time ([\d.]+) s")


def run_once(interval: float, env: dict[str, str], shot: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(interval), str(shot)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    ffn, wall = FFN_LINE.search(out.stdout), WALL_LINE.search(out.stdout)
    if out.returncode != 0 or ffn is None or wall is None:
        raise SystemExit(f"demo failed (rc {out.returncode}):\n{out.stdout}\n{out.stderr}")
    return {
        "figure": "demo_ffn_seconds",
        "update_interval_s": interval,
        "ffn_steps": int(ffn.group(1).replace(",", "")),
        "ffn_s": float(ffn.group(2)),
        "estimated_s": float(ffn.group(3)),
        "wall_s": float(wall.group(1)),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--avx2", action="store_true", help="ONEDNN_MAX_CPU_ISA=AVX2")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.avx2:
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split()
    cpu = {
        "figure": "cpu",
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "onednn_max_isa": env.get("ONEDNN_MAX_CPU_ISA", "native"),
        "cores": os.cpu_count(),
    }
    print(json.dumps(cpu), flush=True)
    runs: dict[float, list[float]] = {0.0: [], 0.5: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for interval in runs:
                row = run_once(interval, env, Path(tmp) / f"demo-{i}-{interval}.png")
                runs[interval].append(row["ffn_s"])
                print(json.dumps(row), flush=True)
    per_step, paced = statistics.median(runs[0.0]), statistics.median(runs[0.5])
    print(
        json.dumps(
            {
                "figure": "demo_ffn_speedup_paced_updates",
                "per_step_updates_ffn_s": per_step,
                "paced_updates_ffn_s": paced,
                "ratio": round(per_step / paced, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
