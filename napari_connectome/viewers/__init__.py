"""Our volumes in the viewers labs also use: a neuroglancer link served from 127.0.0.1
(:mod:`.neuroglancer_link`), and WebKnossos' ``datasource-properties.json`` for our OME-Zarr
outputs (:mod:`.webknossos_properties`). No napari or Qt in here.
"""
