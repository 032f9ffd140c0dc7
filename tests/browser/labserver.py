"""A JupyterLab server and a headless Chromium for the browser tests (no pytest in here, so a script can
use it too, e.g. to take the README's screenshots).

The server runs from this Python (the project's venv) on 127.0.0.1, a random free port, with a random
token, on a TEMPORARY COPY of notebooks/ (so nothing it saves ever reaches the real notebooks), with
its own Jupyter config, settings and runtime folders, and is stopped by its PID.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
# JupyterLab user settings for the test: every cell stays in the page (no virtual scrolling), no autosave,
# no news or update checks (there is no network), no "help us improve" popup
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                      "checkForUpdates": False},
}


def find_chromium() -> str | None:
    """Debian's chromium (``apt-get install chromium``), or ``$CHROMIUM`` when set (only that one: set it to a
    path that does not exist to see the browser tests skip)."""
    chosen = os.environ.get("CHROMIUM")
    candidates = [chosen] if chosen else [shutil.which("chromium"), shutil.which("chromium-browser"),
                                          "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``with LabServer(workdir, env) as lab: lab.url("03_ppo.ipynb")``: JupyterLab on a copy of notebooks/."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, notebooks: Path | None = None):
        self.workdir = Path(workdir)
        self.root = self.workdir / "notebooks"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "jupyterlab.log"
        shutil.copytree(notebooks or ROOT / "notebooks", self.root,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.env = {**os.environ, **(env or {})}
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR",
                     "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
            (self.workdir / name.lower()).mkdir(exist_ok=True)
            self.env[name] = str(self.workdir / name.lower())
        settings = Path(self.env["JUPYTERLAB_SETTINGS_DIR"])
        for rel, value in LAB_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))

    # ---------------------------------------------------------------- start / stop
    def start(self, timeout: float = 120) -> "LabServer":
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI runs as root
        log = self.log_path.open("w")
        # a session of its own, so that stop() can also end the kernels it started (children of the server)
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.api("status")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log()}")

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def stop(self, timeout: float = 30) -> None:
        """Shut the kernels down, then the server (SIGTERM to its PID, SIGKILL if it lingers); then make
        sure nothing of its process group is left."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            try:
                for kernel in self.api("kernels"):
                    self.api(f"kernels/{kernel['id']}", method="DELETE")
            except OSError:
                pass
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(timeout)
        # the group is the server's own (start_new_session): any kernel still alive in it goes too
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def __enter__(self) -> "LabServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- helpers
    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?token={self.token}&reset"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-tail:]
        except OSError:
            return ""


def launch_chromium(playwright, user_data_dir: Path, width: int = 1400, height: int = 900):
    """A headless Debian chromium with a fresh profile: a Playwright persistent context."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height}, device_scale_factor=1)


# ------------------------------------------------------------------------ notebook driving
# window.jupyterapp is exposed (--LabApp.expose_app_in_browser); the current widget is the notebook panel
JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && w.content && w.content.model && w.content.model.cells.length > 0;
}"""
JS_CELLS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) { out.push(cells.get(i).toJSON()); }
  return out;
}"""
JS_BUSY = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session.kernel;
  const prompts = [...document.querySelectorAll('.jp-InputPrompt')].map(p => p.textContent);
  return k.status !== 'idle' || prompts.some(t => t.includes('*'));
}"""


def open_notebook(page, lab: LabServer, name: str, timeout_ms: int = 120_000) -> None:
    page.goto(lab.url(name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout_ms)
    page.wait_for_function(JS_KERNEL_IDLE, timeout=timeout_ms)


def run_all(page, timeout_ms: int) -> float:
    """Run > Run All Cells from the menu bar, as a learner would; wait until every cell ran and the kernel
    is idle. Returns the seconds it took."""
    t0 = time.time()
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()
    page.wait_for_function("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                           ".some(p => p.textContent.includes('*'))", timeout=30_000)
    # idle and no queued cell, seen twice 2 s apart (a cell can finish just before the next one starts)
    deadline = time.time() + timeout_ms / 1000
    quiet = 0
    while time.time() < deadline:
        quiet = quiet + 1 if not page.evaluate(JS_BUSY) else 0
        if quiet >= 2:
            return time.time() - t0
        page.wait_for_timeout(2000)
    raise TimeoutError(f"Run All did not finish within {timeout_ms / 1000:.0f} s")


def cells(page) -> list[dict]:
    """The notebook as nbformat cells (with outputs), read from JupyterLab's model."""
    return page.evaluate(JS_CELLS)


def error_outputs(nb_cells: list[dict]) -> list[str]:
    """``ename: evalue`` of every error output, with the start of its cell."""
    found = []
    for cell in nb_cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = "".join(cell.get("source", ""))[:60]
                found.append(f"{out.get('ename')}: {out.get('evalue')} (cell {src!r})")
    return found


def unexecuted(nb_cells: list[dict]) -> list[str]:
    return ["".join(c.get("source", ""))[:60] for c in nb_cells
            if c["cell_type"] == "code" and "".join(c.get("source", "")).strip() and c.get("execution_count") is None]
