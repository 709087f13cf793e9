"""The explorer end to end in a real browser: Debian's headless Chromium driven by Selenium.

The page is clicked and typed at like a person would: hovering and clicking the map must
change the decoded picture, two clicked test points must render an interpolation, and
the grid, sliders, samples, drawing pad, upload and class selector must all do their
part. Skipped only when Chromium is not installed (``apt-get install -y chromium
chromium-driver``); CI installs it, so these run there. Selenium is told never to
download a browser or a driver: the system's are used.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import train_tiny
from PIL import Image

from vaekit.serve import ExplorerServer, make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (apt-get install -y chromium chromium-driver; CI installs it)",
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--force-device-scale-factor=1",
    "--window-size=1400,1100",
]


# -- servers and the browser ---------------------------------------------------------------------


def _train(root: Path, name: str, *overrides: str) -> Path:
    return train_tiny(root / name, *overrides)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ExplorerServer]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("browser_runs")
    runs = {
        "vae": _train(root, "vae"),
        "ae": _train(root, "ae", "model.posterior=point", "objective.name=ae"),
        "cvae": _train(root, "cvae", "model.conditional=true"),
        "vae3": _train(root, "vae3", "model.latent_dim=3"),
        # Discrete codes: a 2x2 grid of 8 codes (VQ-VAE with a grid encoder).
        "vq": _train(
            root,
            "vq",
            "model.latent_dim=8",
            "model.encoder={name: conv, channels: [8, 8], grid: true}",
            "model.posterior={name: vq, codes: 8, code_dim: 2}",
            "model.prior=categorical",
        ),
    }
    # The autoencoder gets a post-hoc sampler for the page's sampler choice.
    from vaekit.rundir import load
    from vaekit.samplers import fit_sampler

    fit_sampler(load(runs["ae"]), "gmm", {"components": [1, 2]})
    started: dict[str, ExplorerServer] = {}
    for name, run in runs.items():
        server = make_server(str(run), port=0, quiet=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started[name] = server
    yield started
    for server in started.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(
            "Chromium is installed but selenium is not: pip install selenium (it is in the dev extra)"
        )
    if not Path(CHROMEDRIVER).is_file():
        pytest.fail(
            "Chromium is installed but chromedriver is not: apt-get install -y chromium-driver"
        )
    # Selenium Manager would try to download a browser and a driver: forbid it outright.
    old = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path makes Selenium skip its manager entirely.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        if old is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = old


# -- helpers -----------------------------------------------------------------------------------------


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def js(d: Any, script: str, *args: Any) -> Any:
    return d.execute_script(script, *args)


def open_page(d: Any, server: ExplorerServer) -> None:
    d.get(server.url)
    d.get_log("browser")  # drop what an earlier page logged
    wait_for(
        lambda: d.find_element("id", "map").get_attribute("data-ready") == "1", "the map to load"
    )
    wait_for(
        lambda: (decoded(d) or "").startswith("data:image/png;base64,"), "the first decoded picture"
    )


def decoded(d: Any) -> str:
    return str(d.find_element("id", "decoded").get_attribute("src") or "")


def state(d: Any, expr: str) -> Any:
    return js(d, f"return window.vaekitExplorer.state.{expr};")


def map_action(d: Any, x: float, y: float) -> Any:
    """An action chain with the pointer at (x, y) CSS pixels from the map's top-left corner."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = d.find_element("id", "map")
    size = canvas.size
    return ActionChains(d).move_to_element_with_offset(
        canvas, int(x - size["width"] / 2), int(y - size["height"] / 2)
    )


def plot_box(d: Any) -> tuple[float, float, float, float]:
    """The plot area of the map (inside the axes) in CSS pixels: x0, y0, x1, y1."""
    canvas = d.find_element("id", "map")
    w, h = canvas.size["width"], canvas.size["height"]
    return 46.0, 12.0, w - 12.0, h - 36.0


def images_loaded(d: Any, selector: str) -> int:
    return int(
        js(
            d,
            "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length;",
            selector,
        )
    )


def plot_darkness(d: Any) -> float:
    """Mean darkness (0 white .. 1 black) of the map's plot area as drawn on the canvas."""
    return float(
        js(
            d,
            """
            const c = document.getElementById('map');
            const s = c.width / c.getBoundingClientRect().width;
            const g = c.getContext('2d').getImageData(60 * s, 20 * s, c.width - 80 * s, c.height - 70 * s).data;
            let sum = 0;
            for (let i = 0; i < g.length; i += 4) sum += 255 - (g[i] + g[i + 1] + g[i + 2]) / 3;
            return sum / (g.length / 4) / 255;
            """,
        )
    )


def console_errors(d: Any) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


# -- the 2-D VAE -------------------------------------------------------------------------------------


def test_page_loads_with_the_map_and_legend(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    d = browser
    open_page(d, servers["vae"])
    assert "vae" in d.title
    badges = d.find_element("id", "badges").text
    assert "VAE" in badges and "2-D latent" in badges and "digits" in badges
    assert len(d.find_elements("css selector", "#legend .dot")) == 10
    assert state(d, "proj.length") == 359
    assert d.find_element("id", "contours-toggle").is_displayed()
    wait_for(
        lambda: d.find_element("id", "map").get_attribute("data-prior") == "loaded",
        "the prior's contours",
    )
    # Points and contours are drawn: the plot is no longer blank white.
    assert plot_darkness(d) > 0.005
    assert console_errors(d) == []


def test_hover_and_click_on_the_map_decode(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    d = browser
    open_page(d, servers["vae"])
    first = decoded(d)
    x0, y0, x1, y1 = plot_box(d)
    # Hover: the picture follows the pointer.
    map_action(d, x0 + 0.2 * (x1 - x0), y0 + 0.25 * (y1 - y0)).perform()
    wait_for(lambda: decoded(d) != first, "the hovered point to be decoded")
    assert d.find_element("id", "decoded-source").text == "at the pointer"
    hovered = decoded(d)
    map_action(d, x0 + 0.8 * (x1 - x0), y0 + 0.7 * (y1 - y0)).perform()
    wait_for(lambda: decoded(d) not in (first, hovered), "a second hovered point to be decoded")
    # Shift-click pins the marker there: the sliders move to that latent vector.
    from selenium.webdriver.common.keys import Keys

    tx, ty = x0 + 0.75 * (x1 - x0), y0 + 0.3 * (y1 - y0)
    map_action(d, tx, ty).key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()
    wait_for(
        lambda: d.find_element("id", "decoded-source").text == "pinned marker",
        "the marker to be pinned",
    )
    z = state(d, "z")
    b = state(d, "bounds")
    want_u = b["x0"] + (tx - x0) / (x1 - x0) * (b["x1"] - b["x0"])
    want_v = b["y1"] - (ty - y0) / (y1 - y0) * (b["y1"] - b["y0"])
    assert abs(z[0] - want_u) < 0.05 * (b["x1"] - b["x0"]) and abs(z[1] - want_v) < 0.05 * (
        b["y1"] - b["y0"]
    )
    assert float(d.find_element("id", "slider-0").get_attribute("value")) == pytest.approx(
        z[0], abs=0.05
    )
    pinned = wait_for(
        lambda: (
            decoded(d) if d.find_element("id", "zreadout").text.startswith(f"({z[0]:.2f}") else ""
        ),
        "the pinned point's picture",
    )
    # Leaving the map shows the marker's picture again.
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).move_to_element(d.find_element("id", "badges")).perform()
    wait_for(lambda: decoded(d) == pinned, "the marker's picture after leaving the map")
    assert console_errors(d) == []


def test_clicking_two_test_points_renders_the_interpolation(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    d = browser
    open_page(d, servers["vae"])
    labels = state(d, "labels")
    a = labels.index(0)
    b = next(i for i, lab in enumerate(labels) if lab == 1)
    for i in (a, b):
        x, y = js(d, "return window.vaekitExplorer.pointToPixel(arguments[0]);", i)
        map_action(d, x, y).click().perform()
        wait_for(
            lambda: "test point" in d.find_element("id", "decoded-source").text,
            "the test point to be picked",
        )
    picks = state(d, "picks")
    assert len(picks) == 2
    # 10 steps between the two originals.
    wait_for(lambda: images_loaded(d, "#strip img") == 12, "the interpolation strip")
    assert d.find_element("id", "strip").get_attribute("data-kind") == "interp"
    srcs = [e.get_attribute("src") for e in d.find_elements("css selector", "#strip img")]
    assert len(set(srcs[1:-1])) > 2  # the path changes along the way
    assert "interpolation" in d.find_element("id", "strip-title").text.lower()
    assert console_errors(d) == []


def test_grid_overlay_draws_decoded_pictures(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    d = browser
    open_page(d, servers["vae"])
    before = plot_darkness(d)
    d.find_element("id", "grid-on").click()
    wait_for(
        lambda: d.find_element("id", "map").get_attribute("data-grid") == "loaded",
        "the decoded grid",
    )
    wait_for(
        lambda: plot_darkness(d) > before + 0.3, "the grid to darken the map (digits on black)"
    )
    assert state(d, "grid.img.naturalWidth") == 16 * 8
    d.find_element("id", "grid-on").click()
    wait_for(lambda: plot_darkness(d) < before + 0.05, "the grid to go away")
    assert console_errors(d) == []


def test_sliders_traverse_and_traversal_strip(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    from selenium.webdriver.common.keys import Keys

    d = browser
    open_page(d, servers["vae"])
    first = decoded(d)
    slider = d.find_element("id", "slider-0")
    for _ in range(60):
        slider.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: state(d, "z[0]") > 0.3, "z0 to move right")
    wait_for(lambda: decoded(d) != first, "the picture to change with z0")
    d.find_element("css selector", "#sliders .slider-row:nth-child(2) button").click()
    wait_for(lambda: images_loaded(d, "#strip img") == 11, "the traversal of z1")
    assert d.find_element("id", "strip").get_attribute("data-kind") == "traversal"
    # Latent dimensions are named from z0, as in the plots and the CSV of `vaekit encode`.
    assert "z1 from" in d.find_element("id", "strip-title").text
    assert d.find_element("id", "slider-name-0").text == "z0"
    assert console_errors(d) == []


def test_prior_samples(browser: Any, servers: dict[str, ExplorerServer]) -> None:
    d = browser
    open_page(d, servers["vae"])
    d.find_element("id", "sample-btn").click()
    wait_for(lambda: images_loaded(d, "#samples img") == 16, "16 samples")
    samples = state(d, "samples")
    assert len(samples) == 16
    d.find_elements("css selector", "#samples img")[3].click()
    wait_for(lambda: state(d, "z") == samples[3], "the marker to move to the clicked sample")
    assert console_errors(d) == []


def test_samples_from_a_fitted_sampler(browser: Any, servers: dict[str, ExplorerServer]) -> None:
    from selenium.webdriver.support.ui import Select

    d = browser
    open_page(d, servers["ae"])
    select = d.find_element("id", "sampler-select")
    assert select.is_displayed()
    # From the prior, the autoencoder's note says it never saw N(0, I).
    assert "without a prior" in d.find_element("id", "sample-note").text
    Select(select).select_by_value("gmm")
    wait_for(lambda: images_loaded(d, "#samples img") == 16, "16 samples from the gmm")
    assert not d.find_element("id", "sample-note").is_displayed()
    assert not d.find_element("id", "sample-from").is_displayed()  # the choice says it
    # The vae has no fitted sampler: no choice to make.
    open_page(d, servers["vae"])
    assert not d.find_element("id", "sampler-select").is_displayed()
    assert console_errors(d) == []


def test_draw_and_upload_a_picture(
    browser: Any, servers: dict[str, ExplorerServer], tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    d = browser
    open_page(d, servers["vae"])
    pad = d.find_element("id", "draw")
    assert pad.is_displayed()
    ActionChains(d).move_to_element_with_offset(pad, -40, -45).click_and_hold().move_by_offset(
        40, 0
    ).move_by_offset(40, 0).move_by_offset(-30, 50).move_by_offset(-25, 40).release().perform()
    wait_for(
        lambda: d.find_element("id", "enc-recon").get_attribute("src"),
        "the reconstruction of the drawing",
    )
    encoded = state(d, "encoded")
    assert len(encoded["z"]) == 2 and len(encoded["std"]) == 2
    assert state(d, "z") == encoded["z"]
    assert d.find_element("id", "decoded-source").text == "your picture"
    assert "Lands at z" in d.find_element("id", "enc-info").text
    # Upload a picture file: a dark '1' on white paper.
    page = np.full((120, 90), 250, np.uint8)
    page[15:105, 40:52] = 10
    path = tmp_path / "one.png"
    Image.fromarray(page).save(path)
    d.find_element("id", "upload").send_keys(str(path))
    wait_for(lambda: state(d, "encoded.z") != encoded["z"], "the upload to be encoded")
    assert "inverted" in d.find_element("id", "enc-info").text
    # A file of the wrong type is refused in the page with a message.
    bad = tmp_path / "note.gif"
    Image.fromarray(page).save(bad, format="GIF")
    d.find_element("id", "upload").send_keys(str(bad))
    wait_for(
        lambda: "PNG or JPEG" in d.find_element("id", "toast").text, "a message about the file type"
    )
    assert console_errors(d) == []


# -- other runs ---------------------------------------------------------------------------------------


def test_autoencoder_page(browser: Any, servers: dict[str, ExplorerServer]) -> None:
    d = browser
    open_page(d, servers["ae"])
    assert "plain autoencoder" in d.find_element("id", "badges").text
    assert not d.find_element("id", "contours-toggle").is_displayed()
    assert d.find_element("id", "sample-note").is_displayed()
    assert state(d, "proj.length") == 359
    first = decoded(d)
    x0, y0, x1, y1 = plot_box(d)
    map_action(d, x0 + 0.9 * (x1 - x0), y0 + 0.1 * (y1 - y0)).perform()
    wait_for(lambda: decoded(d) != first, "the autoencoder to decode the hovered point")
    labels = state(d, "labels")
    for i in (labels.index(2), labels.index(7)):
        x, y = js(d, "return window.vaekitExplorer.pointToPixel(arguments[0]);", i)
        map_action(d, x, y).click().perform()
    wait_for(lambda: images_loaded(d, "#strip img") == 12, "the autoencoder's interpolation")
    assert console_errors(d) == []


def test_conditional_class_selector(browser: Any, servers: dict[str, ExplorerServer]) -> None:
    d = browser
    open_page(d, servers["cvae"])
    assert d.find_element("id", "class-card").is_displayed()
    chips = d.find_elements("css selector", "#classes .chip")
    assert [c.text for c in chips] == [str(i) for i in range(10)]
    assert chips[0].get_attribute("aria-checked") == "true"
    first = decoded(d)
    d.find_element("id", "sample-btn").click()
    wait_for(lambda: images_loaded(d, "#samples img") == 16, "16 samples of class 0")
    codes = state(d, "samples")
    before = [e.get_attribute("src") for e in d.find_elements("css selector", "#samples img")]
    chips[7].click()
    wait_for(lambda: decoded(d) != first, "the picture to change with the class")
    assert chips[7].get_attribute("aria-checked") == "true" and state(d, "label") == 7
    # The samples keep their codes and are decoded again in the new class.
    wait_for(
        lambda: (
            [e.get_attribute("src") for e in d.find_elements("css selector", "#samples img")]
            != before
        ),
        "the samples to be decoded as class 7",
    )
    assert state(d, "samples") == codes
    assert console_errors(d) == []


def test_more_latent_dimensions_offer_projection_and_dimension_choice(
    browser: Any, servers: dict[str, ExplorerServer]
) -> None:
    from selenium.webdriver.support.ui import Select

    d = browser
    open_page(d, servers["vae3"])
    assert d.find_element("id", "view-group").is_displayed()
    assert (
        Select(d.find_element("id", "view-mode")).first_selected_option.get_attribute("value")
        == "pca"
    )
    assert state(d, "mode") == "pca"
    assert len(d.find_elements("css selector", "#sliders input[type=range]")) == 3
    Select(d.find_element("id", "view-mode")).select_by_value("dims")
    assert d.find_element("id", "dims-pick").is_displayed()
    Select(d.find_element("id", "dim-y")).select_by_value("2")
    wait_for(lambda: state(d, "dy") == 2, "the y axis to show z2")
    assert Select(d.find_element("id", "dim-y")).first_selected_option.text == "z2"
    codes0 = state(d, "codes[0]")
    assert state(d, "proj[0]") == [codes0[0], codes0[2]]
    first = decoded(d)
    x0, y0, x1, y1 = plot_box(d)
    map_action(d, x0 + 0.3 * (x1 - x0), y0 + 0.3 * (y1 - y0)).perform()
    wait_for(lambda: decoded(d) != first, "decoding in the (z0, z2) plane")
    assert console_errors(d) == []


def test_code_editor_of_a_discrete_model(browser: Any, servers: dict[str, ExplorerServer]) -> None:
    from selenium.webdriver.support.ui import Select

    d = browser
    open_page(d, servers["vq"])
    # Codes get an editor in place of sliders over single coordinates of code vectors.
    assert d.find_element("id", "codes-card").is_displayed()
    assert not d.find_element("id", "sliders-card").is_displayed()
    assert len(d.find_elements("css selector", "#codegrid .code-cell")) == 4
    wait_for(lambda: images_loaded(d, "#code-decoded") == 1, "the code grid's decoding")
    grid = state(d, "codeGrid")
    assert d.find_element("id", "code-cell-1").text == str(grid[1])
    # Click a position, pick a code: the grid, its decoding and the marker follow.
    d.find_element("id", "code-cell-1").click()
    assert "selected" in d.find_element("id", "code-cell-1").get_attribute("class")
    new = (grid[1] + 3) % 8
    Select(d.find_element("id", "code-pick")).select_by_value(str(new))
    wait_for(lambda: state(d, "source") == "edited codes", "the marker to move to the edited codes")
    assert state(d, "codeGrid") == [*grid[:1], new, *grid[2:]]
    assert d.find_element("id", "code-cell-1").text == str(new)
    z = state(d, "z")
    codes = servers["vq"].explorer.codes_of(np.array([z]))
    assert codes == [state(d, "codeGrid")]
    # A clicked test point brings its own codes.
    x, y = js(d, "return window.vaekitExplorer.pointToPixel(7);")
    map_action(d, x, y).click().perform()
    wait_for(
        lambda: state(d, "codeGrid") == servers["vq"].explorer.points()["codes"][7],
        "test point 7's codes in the editor",
    )
    assert console_errors(d) == []
