"""Every workflow file loads in ComfyUI's own frontend without missing nodes or errors, and the frontend reads each
widget value into the input the tests execute it with.

ComfyUI's server (main.py, ``--cpu``) runs as a subprocess on the base directory the workflow tests prepared (the
pack, the tiny models under the official file names, the reference photo and face packs) and serves the installed
frontend (the ``comfyui_frontend_package`` of ComfyUI's requirements). Headless Chromium (Debian's ``chromium``,
driven by playwright; scripts/setup_env.sh installs both) opens it, and for each file calls the frontend's own
``app.loadGraphData``, then reads what the frontend itself reports:

- missing node types: the list the frontend hands its extensions' ``afterConfigureGraph`` hook, the same list its
  missing-nodes dialog shows;
- errors: dialogs and toasts the frontend opens while loading (a graph that fails to configure, a workflow that
  fails the frontend's schema validation, links it had to repair) and uncaught exceptions in the page;
- the API prompt the frontend would queue (``app.graphToPrompt``): it must equal ``dev.ui_workflow.ui_to_api``
  of the file, the prompt tests/workflows/test_workflows.py executes, input for input.

The files saved before the renames and before ``expert_switch_step`` existed (saved/) load too, the new input
taking its default. Not checked: how the graph looks (layout, overlaps), whether the model files exist for the
frontend's missing-model report (that report needs the newer server's model APIs; the model names are checked by
executing the files), and anything after queueing (execution is test_workflows.py's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dev.comfy_runtime import comfyui_path
from dev.ui_workflow import node_inputs, ui_to_api
from test_workflows import WORKFLOWS, rt  # noqa: F401  (the ComfyUI base directory with the workflows' assets)

SAVED = sorted((Path(__file__).resolve().parent / "saved").glob("*.json"))
CHROMIUM = os.environ.get("PERSONALVIDEO_CHROMIUM", "/usr/bin/chromium")
# Another frontend build to serve (its static/ folder, e.g. of an older comfyui-frontend-package), instead of the
# installed one: ComfyUI's --front-end-root.
FRONTEND_ROOT = os.environ.get("PERSONALVIDEO_FRONTEND_ROOT")
NEW_INPUT_DEFAULTS = {"PersonalVideoTrainIdentityAdapter": {"expert_switch_step": 0, "decode_gradient": "checkpointed"}}

LOAD = """async (workflow) => {
    document.querySelectorAll('.p-dialog, .p-toast-message').forEach(e => e.dataset.pvSeen = '1');
    const missing = [];
    window.__pvMissing = missing;
    await app.loadGraphData(workflow, true, true, 'personalvideo-check');
    await new Promise(r => setTimeout(r, 500));  // toasts and dialogs render asynchronously
    const fresh = sel => [...document.querySelectorAll(sel)].filter(e => !e.dataset.pvSeen)
        .map(e => e.innerText.trim().slice(0, 400));
    const prompt = await app.graphToPrompt();
    return {missing: missing.map(m => typeof m === 'string' ? m : m.type), dialogs: fresh('.p-dialog'),
            toasts: fresh('.p-toast-message'), output: prompt.output};
}"""
HOOK = """() => app.registerExtension({name: 'personalvideo.frontend-check',
    afterConfigureGraph(missing) { (window.__pvMissing || []).push(...(missing || [])); }})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def frontend(rt):  # noqa: F811
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        pytest.fail(f"no Chromium at {CHROMIUM}: run scripts/setup_env.sh (it installs Debian's chromium), or "
                    "apt-get install chromium, or set PERSONALVIDEO_CHROMIUM to a Chromium binary")
    from playwright.sync_api import sync_playwright  # requirements-test.txt

    port = _free_port()
    log = open(rt.base_dir / "frontend_server.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(comfyui_path() / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(rt.base_dir), "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
         *(["--front-end-root", FRONTEND_ROOT] if FRONTEND_ROOT else [])],
        cwd=comfyui_path(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(url + "object_info/PersonalVideoTrainIdentityAdapter", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_text = (rt.base_dir / "frontend_server.log").read_text()
                    pytest.fail(f"ComfyUI's server did not start: {log_text[-3000:]}")
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, headless=True)
            page = browser.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(url, timeout=300_000)
            page.wait_for_function("() => window.app && app.graph && window.LiteGraph && "
                                   "'PersonalVideoTrainIdentityAdapter' in LiteGraph.registered_node_types",
                                   timeout=300_000)
            page.evaluate(HOOK)
            version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || 'unknown'")

            def load(path: Path) -> dict:
                before = len(page_errors)
                out = page.evaluate(LOAD, json.loads(path.read_text()))
                return out | {"page_errors": page_errors[before:], "frontend": version}

            yield load
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _inputs(prompt: dict) -> dict:
    """{node id: (class, inputs)}, the inputs limited to those the node defines: some frontends also send their own
    display widgets (1.32's PreviewAny sends 'preview'), which the server ignores."""
    out = {}
    for key, node in prompt.items():
        defined = {name for name, *_ in node_inputs(node["class_type"])}
        out[key] = (node["class_type"], {k: v for k, v in node["inputs"].items() if k in defined})
    return out


@pytest.mark.parametrize("path", WORKFLOWS + SAVED, ids=lambda p: ("saved/" if p in SAVED else "") + p.stem)
def test_frontend_loads_the_file_without_missing_nodes_or_errors(frontend, path):
    report = frontend(path)
    where = f"{path.name} in frontend {report['frontend']}"
    assert report["missing"] == [], f"{where}: missing node types {report['missing']}"
    assert not report["dialogs"] and not report["toasts"], f"{where}: {report['dialogs'] + report['toasts']}"
    assert not report["page_errors"], f"{where}: {report['page_errors']}"
    expected = ui_to_api(json.loads(path.read_text()))
    if path in SAVED:  # the frontend gives inputs the file predates their defaults, as the executor does
        for node in expected.values():
            node["inputs"] = NEW_INPUT_DEFAULTS.get(node["class_type"], {}) | node["inputs"]
    got, want = _inputs(report["output"]), _inputs(expected)
    assert got == want, f"{where}: " + "; ".join(f"node {k}: frontend {got.get(k)} != file {want.get(k)}"
                                                 for k in sorted(got.keys() | want.keys()) if got.get(k) != want.get(k))


def test_the_check_sees_a_missing_node_and_a_shifted_widget(frontend, tmp_path):
    """The check can fail: an unknown node type is reported missing, and a widget value moved one place shows
    up in the frontend's prompt as another input's value."""
    wf = json.loads(next(p for p in WORKFLOWS if p.stem == "train_and_generate_wan22_a14b").read_text())
    trainer = next(n for n in wf["nodes"] if n["type"] == "PersonalVideoTrainIdentityAdapter")
    trainer["widgets_values"].insert(0, 7)
    sampler = next(n for n in wf["nodes"] if n["type"] == "KSamplerAdvanced")
    sampler["type"] = "PersonalVideoNoSuchSampler"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(wf))
    report = frontend(broken)
    assert report["missing"] == ["PersonalVideoNoSuchSampler"], report["missing"]
    node = report["output"][str(trainer["id"])]["inputs"]
    assert node["steps"] == 7 and node["learning_rate"] == 200, node
