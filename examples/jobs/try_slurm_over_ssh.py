"""Try the Slurm-over-SSH path on one machine: a throwaway one-node Slurm cluster behind an sshd on
127.0.0.1 (Debian: apt-get install slurm-wlm munge openssh-server), a small test volume, and a job
spec that reaches the cluster through SSH with a verified host key.

    python examples/jobs/try_slurm_over_ssh.py [WORKDIR]

It prints the spec path and the commands to run in another terminal, then keeps the services up
until Ctrl-C (they are stopped by pid; WORKDIR keeps the volume, spec and outputs).
"""

from __future__ import annotations

import shlex
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
    volume = work / "synthetic.h5"
    if not volume.exists():
        em = synthetic_em((64, 96, 96), seed=1)
        with h5py.File(volume, "w") as f:
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
    q = shlex.quote
    print(
        f"Slurm cluster + login node up (sshd on {login.host}:{login.port}). In another terminal:\n"
    )
    print(f"  napari-connectome submit {q(str(spec_path))}        # prints JOB")
    print("  napari-connectome status JOB")
    print(f"  napari-connectome stream JOB {q(str(work / 'cache.ome.zarr'))}")
    print("  napari-connectome cancel JOB")
    print(f"  napari-connectome submit --resume {q(str(spec_path))}")
    print("\nCtrl-C here stops the services.", flush=True)
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
