import sys

from napari_connectome.cli import main

sys.exit(main())
