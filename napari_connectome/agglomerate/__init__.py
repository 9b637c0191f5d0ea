"""Agglomeration of a segmentation's supervoxels by merge scores on its region graph.

```python
from napari_connectome.agglomerate import agglomerate
from napari_connectome.volumes import open_volume

agglomerate(open_volume("seg.zarr"), open_volume("em.h5:raw"), "agg.ome.zarr", threshold=0.65)
```

See docs/agglomeration.md for the rule, the output layout and measured figures. No napari here.
"""

from napari_connectome.agglomerate.rule import UnionFind, mean_affinity_agglomerate
from napari_connectome.agglomerate.run import DEFAULT_THRESHOLD, agglomerate

__all__ = ["DEFAULT_THRESHOLD", "UnionFind", "agglomerate", "mean_affinity_agglomerate"]
