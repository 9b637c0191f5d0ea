"""The napari layer: readers, writers, sample data and dock widgets. The only package importing
napari/Qt.
"""
