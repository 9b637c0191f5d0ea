"""The region graph of a segmentation, computed blockwise on Dask and stored beside it.

Per fragment (supervoxel id): voxel count and bounding box. Per pair of touching fragments: the
number of voxel faces they share and the boundary evidence across them. Per stored chunk: a
digest, and one fingerprint of the whole volume. Depends only on ``volumes`` (no napari, no Qt).

```python
from napari_connectome.graph import compute_region_graph, RegionGraph

compute_region_graph(volume, "seg.region_graph", image=em)  # a LocalCluster on 127.0.0.1
g = RegionGraph.open("seg.region_graph")
rows = g.rows_of([17, 42])
counts, lo, hi = g.stats(rows)
edges = g.edges_of(rows)
```
"""

from napari_connectome.graph.compute import compute_region_graph, fingerprint_of
from napari_connectome.graph.kernels import chunk_digest_of
from napari_connectome.graph.layout import FORMAT, FORMAT_VERSION, is_complete
from napari_connectome.graph.store import RegionGraph

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "RegionGraph",
    "chunk_digest_of",
    "compute_region_graph",
    "fingerprint_of",
    "is_complete",
]
