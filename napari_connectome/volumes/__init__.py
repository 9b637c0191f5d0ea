"""Volume I/O: open any EM volume lazily with its voxel size, and write OME-Zarr 0.5 pyramids."""
