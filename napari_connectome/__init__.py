"""napari-connectome: EM volumes, flood-filling networks, HPC jobs and proofreading.

The core sub-packages (``volumes``, ``ffn``, ``jobs``, ``proofread``, ``evaluate``, ``graph``,
``meshing``, ``cli``) never import napari or Qt, so they work from notebooks, the command line and
cluster nodes, and ``pip install napari-connectome`` installs them alone; ``gui`` is the only napari
layer (``pip install "napari-connectome[napari]"``). Heavy modules (torch, dask.distributed,
asyncssh) are imported lazily inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
