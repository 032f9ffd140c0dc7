"""The browser tests import their helpers from labserver.py beside this file."""


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium (skipped without one)")
