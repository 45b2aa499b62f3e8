"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver.

Both executables are named explicitly (a ``Service`` with the driver's path, the browser's
``binary_location``): Selenium then has nothing to look up, and Selenium Manager, which would
try to download a browser or a driver, is never asked (``SE_OFFLINE`` tells it so if it were).
``.ci/run`` installs the two Debian packages.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHROMEDRIVER", "CHROMIUM", "missing", "start_chromium"]

CHROMIUM = os.environ.get("AGENTS_BAR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AGENTS_BAR_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing() -> str | None:
    """Why the browser cannot run here (what to install), or None when it can."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]
    if absent:
        return f"{' and '.join(absent)} not found: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install '.[test]'"
    return None


def start_chromium(profile_dir: Path, *, width: int = 1280, height: int = 900):
    """A headless chromium WebDriver with its profile in ``profile_dir`` (the caller quits it)."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should anything call it: no downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        # Containers (and CI) run as root, where chromium's sandbox cannot start.
        "--no-sandbox",
        # /dev/shm is 64 MB in many containers: chromium crashes on big pages when it fills.
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile_dir}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    log = profile_dir.parent / "chromedriver.log"
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


