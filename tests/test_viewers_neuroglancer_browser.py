"""Our segmentation in a real neuroglancer: the neuroglancer package's bundled client in headless
Chromium (Debian's chromium + chromium-driver, software WebGL), reading our OME-Zarr 0.5 through
``zarr3://`` from the loopback file server. A key bound to a Python action reports the id under the
mouse, as a user hovering sees it; ids at probe points must equal ours, 2^60 + 5 included.

Needs chromium, chromium-driver (.ci/run installs them), selenium and neuroglancer (the test
extra); skipped without them, which CI (NAPARI_CONNECTOME_REQUIRE_SERVICES=1) turns into a failure.
"""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

from napari_connectome.volumes import write_ome_zarr

BIG = 2**60 + 5
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _segmentation() -> np.ndarray:
    seg = np.zeros((24, 48, 80), np.uint64)
    seg[4:20, 10:30, 5:40] = BIG
    seg[10:22, 5:40, 40:70] = 7
    seg[0:6, 36:48, 60:80] = 2**32 + 1  # above uint32: neuroglancer's uint64 path
    return seg


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install them)")
    pytest.importorskip("neuroglancer")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",  # WebGL 2 in software: no GPU here
        "--enable-unsafe-swiftshader",
        "--window-size=800,600",
    ):
        options.add_argument(arg)
    # the driver by path: selenium's manager would try to download one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _probe(driver, viewer, got, event, zyx, layer="seg", tries=60):
    """Centre the view on voxel ``zyx``, hover the panel's centre and press the probe key until
    neuroglancer has the chunk; returns (voxel under the mouse (x, y, z), value)."""
    from selenium.webdriver.common.action_chains import ActionChains

    with viewer.txn() as s:
        s.position = [zyx[2] + 0.5, zyx[1] + 0.5, zyx[0] + 0.5]
    for _ in range(tries):
        event.clear()
        canvas = driver.find_element("css selector", "canvas")
        ActionChains(driver).move_to_element(canvas).move_by_offset(1, 1).move_by_offset(
            -1, -1
        ).send_keys("p").perform()
        event.wait(5)
        sel = (got.get("values") or {}).get(layer)
        if sel is not None and sel.value is not None and got.get("pos") is not None:
            return np.asarray(got["pos"], float), int(sel.value)
        time.sleep(0.5)
    raise AssertionError(f"neuroglancer never reported a value at {zyx}")


def test_neuroglancer_in_chromium_shows_our_ids(browser, tmp_path):
    from napari_connectome.viewers.neuroglancer_link import make_link

    seg = _segmentation()
    write_ome_zarr(seg, tmp_path / "seg.ome.zarr", voxel_size_nm=(40, 8, 8), labels=True, chunks=16)
    with make_link([str(tmp_path / "seg.ome.zarr")], segments=[BIG]) as link:
        assert link.state["layers"][0]["source"].startswith("zarr3://http://127.0.0.1:")
        viewer = link.viewer
        got: dict = {}
        event = threading.Event()

        def probe(action_state) -> None:
            got["values"] = action_state.selected_values
            got["pos"] = action_state.mouse_voxel_coordinates
            event.set()

        viewer.actions.add("probe", probe)
        with viewer.config_state.txn() as s:
            s.input_event_bindings.viewer["keyp"] = "probe"
            s.show_ui_controls = False
        with viewer.txn() as s:
            s.layout = "xy"
            s.cross_section_scale = 0.05  # a voxel spans many pixels: the mouse is well inside
            s.selected_layer.visible = False  # the side panel would move the xy panel's centre
        browser.get(link.url)
        served_before = link.files.requests
        for zyx in [(10, 20, 20), (15, 20, 50), (2, 40, 70), (2, 2, 2), (21, 45, 10)]:
            pos, value = _probe(browser, viewer, got, event, zyx)
            assert np.allclose(pos, [zyx[2] + 0.5, zyx[1] + 0.5, zyx[0] + 0.5], atol=0.6)
            assert value == int(seg[zyx]), (zyx, value)
        # the chunks came from our file server (zarr3:// reads them itself)
        assert link.files.requests > served_before
        state = viewer.state
        assert [int(x) for x in state.layers["seg"].layer.segments] == [BIG]
