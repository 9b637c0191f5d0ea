"""docs/images/neuroglancer-link.png: FIB-25 EM and bodies (OME-Zarr from ``convert``) with the
meshes of five bodies (``export-meshes``), opened by ``napari-connectome neuroglancer`` in headless
Chromium (needs chromium, chromium-driver, selenium, neuroglancer and ../shared/data).

    .venv/bin/python docs/images/make_neuroglancer_screenshot.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
H5 = (
    HERE.parents[1]
    / ".."
    / "shared"
    / "data"
    / "fib25-training-sample2"
    / "fib25_training_sample2.h5"
)


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from napari_connectome.cli import main as cli
    from napari_connectome.viewers.neuroglancer_link import make_link

    with tempfile.TemporaryDirectory() as tmp:
        em, seg, meshes = (Path(tmp) / n for n in ("em.ome.zarr", "seg.ome.zarr", "meshes"))
        assert cli(["convert", f"{H5}:raw", str(em), "--quiet"]) == 0
        assert cli(["convert", f"{H5}:labels", str(seg), "--labels", "--quiet"]) == 0
        import h5py

        with h5py.File(H5, "r") as f:
            ids, counts = np.unique(f["labels"][:], return_counts=True)
        keep = ids != 0
        top = [int(i) for i in ids[keep][np.argsort(-counts[keep])][:5]]
        assert cli(["export-meshes", str(seg), str(meshes), "--segments", *map(str, top),
                    "--quiet"]) == 0  # fmt: skip
        with make_link([str(em), str(seg)], segments=top, meshes=meshes) as link:
            with link.viewer.txn() as s:
                s.layout = "4panel"
                s.cross_section_scale = 0.6
                s.projection_scale = 420
                s.selected_layer.visible = False
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium")
            for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                        "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                        "--window-size=1280,860"):  # fmt: skip
                options.add_argument(arg)
            driver = webdriver.Chrome(
                service=Service(shutil.which("chromedriver")), options=options
            )
            try:
                driver.get(link.url)
                time.sleep(40)  # software WebGL: chunks and meshes take a while to draw
                driver.save_screenshot(str(HERE / "neuroglancer-link.png"))
            finally:
                driver.quit()
    print(HERE / "neuroglancer-link.png")


if __name__ == "__main__":
    main()
