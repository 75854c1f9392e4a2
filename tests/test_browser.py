"""The web page in headless Chromium (Selenium + Debian's chromium / chromium-driver): upload an
image, wait for the result, and check that the score and verdict shown are the API's."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests._trained import running_server, sample_images, trained_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOT_DIR = Path(os.environ.get("GANOMALY_SCREENSHOTS", tempfile.gettempdir()))

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed"
)


def test_upload_shows_the_apis_score_and_verdict(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run_dir = trained_run(tmp_path_factory)
    images = sample_images(tmp_path / "images")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    with running_server(run_dir) as url:
        expected = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            for image in images[:2]:
                files = [("file", (image.name, image.read_bytes(), "image/png"))]
                expected[image.name] = client.post("/v1/score", files=files).json()["results"][0]
        driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
        try:
            driver.set_page_load_timeout(30)
            driver.get(url + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: "digits" in d.find_element(By.ID, "model-line").text)
            for image in images[:2]:  # a PNG, then a JPEG: the page updates for each
                driver.find_element(By.ID, "file-input").send_keys(str(image))
                wait.until(
                    lambda d, name=image.name: d.find_element(By.ID, "filename").text == name
                )
                wait.until(
                    lambda d: (
                        d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
                    )
                )
                want = expected[image.name]
                shown = driver.find_element(By.ID, "normalized-score")
                assert shown.text == f"{want['normalized_score']:.3f}"
                assert float(shown.get_attribute("data-value") or "nan") == pytest.approx(
                    want["normalized_score"], abs=1e-6
                )
                verdict = driver.find_element(By.ID, "verdict").text
                assert verdict == ("ANOMALY" if want["is_anomaly"] else "NORMAL")
                for element_id in ("img-original", "img-input", "img-recon", "img-map"):
                    loaded = driver.execute_script(
                        "const i = document.getElementById(arguments[0]);"
                        "return i.complete && i.naturalWidth > 0;", element_id,
                    )  # fmt: skip
                    assert loaded, element_id
            rows = driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
            assert len(rows) == 2
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            shot = SCREENSHOT_DIR / "ganomaly-web-page.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        finally:
            driver.quit()
