"""Try the Slurm-over-SSH path on one machine: a throwaway one-node Slurm cluster behind an sshd on
127.0.0.1 (Debian: apt-get install slurm-wlm munge openssh-server), a small test volume, and a job
spec that reaches the cluster through SSH with a verified host key.

    python examples/jobs/try_slurm_over_ssh.py [WORKDIR]

It writes three specs into WORKDIR: ``job.yaml`` (8 blocks, done in seconds), and ``resume.yaml`` /
``reference.yaml``, one job of 864 small blocks (about half a minute) with two outputs, to cancel
half way, resume and compare with an uninterrupted run. It prints the commands to run in another
terminal, then keeps the services up until Ctrl-C or SIGTERM (they are stopped by pid and their
key folders removed; WORKDIR keeps the volume, specs and outputs).
"""

from __future__ import annotations

import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from napari_connectome.samples import synthetic_em
from napari_connectome.testing.services import start_slurm_cluster, start_slurm_login_node


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nc-try-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    volume, larger = work / "synthetic.h5", work / "synthetic-larger.h5"
    for path, shape, seed in ((volume, (64, 96, 96), 1), (larger, (96, 192, 192), 2)):
        if not path.exists():
            em = synthetic_em(shape, seed=seed)
            with h5py.File(path, "w") as f:
                f["raw"] = np.asarray(em.image)
                f["raw"].attrs["resolution_nm_zyx"] = list(em.voxel_size_nm)
    cluster = start_slurm_cluster()
    login = start_slurm_login_node(cluster)
    spec = {
        "name": "try-slurm",
        "input": f"{volume}:raw",
        "output": str(work / "result.ome.zarr"),
        "block_shape": [32, 48, 48],
        "overlap": [8, 8, 8],
        "segmenter": {"kind": "watershed", "threshold": 110},
        "backend": {
            "kind": "slurm",
            "workers": 1,
            "resources": {"partition": "debug", "walltime": "00:10:00", "python": sys.executable},
            "ssh": {
                "host": login.host,
                "port": login.port,
                "user": login.user,
                "key": str(login.client_key),
                "known_hosts": str(login.known_hosts),
            },
        },
    }
    spec_path = work / "job.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    small = {
        **spec,
        "name": "try-resume",
        "input": f"{larger}:raw",
        "block_shape": [16, 16, 16],
        "overlap": [4, 4, 4],
    }
    for name in ("resume", "reference"):
        out = {**small, "output": str(work / f"{name}.ome.zarr")}
        (work / f"{name}.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    compare = (
        "import sys, zarr, numpy as np; "
        "a, b = (zarr.open_array(p + '/0')[:] for p in sys.argv[1:]); "
        "print('identical' if np.array_equal(a, b) else 'DIFFERENT')"
    )
    print(f"Slurm cluster + login node up (sshd on {login.host}:{login.port}).")
    print("In another terminal (with this Python environment active):\n")
    print(f"  J=$(napari-connectome submit {q(spec_path)})")
    print("  napari-connectome status $J")
    print(f"  napari-connectome stream $J {q(work / 'cache.ome.zarr')}")
    print(f"  napari {q(work / 'cache.ome.zarr')}          # open what arrived")
    print(f"\nOr in napari: Remote jobs > Import from job YAML... {spec_path}, Save profile.")
    print("\nInterrupt and resume (864 blocks, about half a minute):\n")
    print(f"  R=$(napari-connectome submit {q(work / 'resume.yaml')})")
    print("  napari-connectome status $R                 # when blocks_done is about half:")
    print("  napari-connectome cancel $R")
    print(f"  napari-connectome submit --resume {q(work / 'resume.yaml')}   # only missing blocks")
    print(f"  napari-connectome submit {q(work / 'reference.yaml')}          # same job, no stop")
    print(f'  python -c "{compare}" {q(work / "resume.ome.zarr")} {q(work / "reference.ome.zarr")}')
    print("\nCtrl-C (or SIGTERM) here stops the services.", flush=True)

    def stop_on_signal(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        login.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
