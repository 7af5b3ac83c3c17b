"""The web page at / in a real browser: headless Chromium (Debian's chromium + chromium-driver) via selenium.

Uploads an example vocal, picks a preset, moves the amount slider with the keyboard, edits
a setting in the table, plays the mix, and downloads the mix and its JSON.  Skipped only
when Chromium is missing outside CI; under CI (CI set) a missing browser fails the test.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import soundfile as sf

from dmst import schema
from dmst.effects.sends import tail_samples

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _serve_server import ROOT, Server  # noqa: E402

EXAMPLE = ROOT / "examples" / "and_its_all.wav"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _browser_or_skip():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {', '.join(missing)} is missing; run scripts/install_browser.sh")
        pytest.skip(f"{', '.join(missing)} not installed (scripts/install_browser.sh)")


@pytest.fixture()
def browser(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def wait(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_uploads_renders_edits_plays_and_downloads(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server = Server(tmp_path / "data", "--torch-threads", "1")
    try:
        browser.get(server.url + "/")
        wait(lambda: browser.find_elements(By.ID, "preset-warm"), what="the preset list")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        renders = lambda: int(find("render-count").text or 0)  # noqa: E731
        settings = lambda: browser.execute_script("return state.settings")  # noqa: E731

        find("file").send_keys(str(EXAMPLE))
        wait(lambda: renders() >= 1, what="the first mix")
        assert settings()["meta"]["presets"] == [] and find("mix-audio").get_attribute("src").startswith("blob:")
        # the curves come from their own request after the mix: wait for them, do not race them
        wait(lambda: int(find("eq-canvas").get_attribute("data-points") or 0) > 0, what="the EQ curve")
        wait(lambda: int(find("comp-canvas").get_attribute("data-points") or 0) > 0, what="the compressor curve")

        find("preset-warm").click()
        wait(lambda: settings()["meta"]["presets"] == ["warm"], what="the warm mix")
        slider = find("amount")
        slider.click()
        for _ in range(6):  # the keyboard moves the slider as a person would: 1.0 -> 0.7
            slider.send_keys(Keys.ARROW_LEFT)
        wait(lambda: abs(settings()["meta"]["amount"] - 0.7) < 1e-9, what="the mix at amount 0.7")
        assert find("amount-value").text == "0.70"

        count = renders()
        attack = find("param-compressor.attack_ms")
        attack.clear()
        attack.send_keys("33", Keys.TAB)  # 'change' fires: the mix renders with exactly the table's settings
        wait(lambda: renders() > count and settings()["compressor"]["attack_ms"] == 33, what="the edited mix")
        assert "error" not in (find("status").get_attribute("class") or "")

        played = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const mix = document.getElementById('mix-audio');
            document.getElementById('play').click();
            setTimeout(() => done({time: mix.currentTime, paused: mix.paused,
                                   raw: document.getElementById('raw-audio').volume, mix: mix.volume}), 1500);
        """)
        assert played["time"] > 0.2 and not played["paused"], played
        assert min(played["raw"], played["mix"]) < 1.0 == max(played["raw"], played["mix"])  # matched loudness

        find("download-mix").click()
        find("download-json").click()
        mix_file = wait(lambda: next(iter(browser.downloads.glob("*_mix.wav")), None), what="the mix download")
        json_file = wait(lambda: next(iter(browser.downloads.glob("*_settings.json")), None), what="the JSON download")
        wait(lambda: not list(browser.downloads.glob("*.crdownload")), what="downloads to finish")
        info, source = sf.info(str(mix_file)), sf.info(str(EXAMPLE))
        doc = json.loads(Path(json_file).read_text())
        # The whole take, followed by its sends' tail (the bundled model's reverb is on)
        tail = tail_samples(source.samplerate, doc["delay"], doc["reverb"])
        assert info.frames == source.frames + tail and info.samplerate == source.samplerate
        assert doc["compressor"]["attack_ms"] == 33 and doc["schema_version"] == schema.SCHEMA_VERSION
    finally:
        server.stop()
