"""Run a real ComfyUI in this process, with this pack installed, and execute graphs in it.

Used by the tests and the demo. The ComfyUI is the one ``scripts/setup_env.sh`` put in
``.comfyui/ComfyUI`` (0.3.75 from PyPI) unless ``COMFYUI_PATH`` names another checkout.
``ComfyRuntime.boot()`` is once per process: ComfyUI keeps its state in module globals.

The pack is this checkout, installed (editable) as the package ``personalvideo``, which is what tests import;
ComfyUI loads the same folder from ``custom_nodes/personalvideo`` and its node classes are that package's, so a
process holds one copy of every module of the pack (``boot`` checks it).

It boots with ``--cpu`` unless ``PERSONALVIDEO_COMFY_DEVICE=cuda`` (then ComfyUI picks its GPU as it does for
users; benchmarks/gpu_check.sh runs the tests and its measurements that way). ``PERSONALVIDEO_COMFY_ARGS``
adds ComfyUI arguments (e.g. ``--cpu-vae``, ``--disable-dynamic-vram``). On a ComfyUI with DynamicVRAM (0.33) and a
card it supports, the boot turns it on as ComfyUI's main.py does (it is main.py, not an import, that does it), so
GPU runs test the patcher users get unless ``--disable-dynamic-vram`` is given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "personalvideo"
DEV_NODES = REPO / "dev" / "standin_nodes"
DEVICE_ENV = "PERSONALVIDEO_COMFY_DEVICE"
ARGS_ENV = "PERSONALVIDEO_COMFY_ARGS"

log = logging.getLogger(__name__)


def device_args() -> list[str]:
    """ComfyUI's device arguments: ``$PERSONALVIDEO_COMFY_DEVICE`` (``cpu``, the default, or ``cuda``) and any
    extra arguments in ``$PERSONALVIDEO_COMFY_ARGS``."""
    import shlex

    device = os.environ.get(DEVICE_ENV, "cpu").strip().lower() or "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV}: got {device!r}, expected 'cpu' or 'cuda'")
    return (["--cpu"] if device == "cpu" else []) + shlex.split(os.environ.get(ARGS_ENV, ""))


def installed_pack():
    """The package ``personalvideo``, checked to be this checkout (an editable install points at one checkout; a
    virtual environment shared between checkouts may point at another); ImportError saying how to fix it."""
    try:
        import personalvideo
    except ImportError as e:
        raise ImportError(f"the package personalvideo is not installed: run scripts/setup_env.sh (or `python -m pip "
                          f"install --no-deps -e {REPO}` in this checkout's .venv)") from e
    where = Path(personalvideo.__file__).resolve().parent
    if where != REPO:
        raise ImportError(f"personalvideo is installed from {where}, not from this checkout {REPO}: run "
                          f"scripts/setup_env.sh here (or `python -m pip install --no-deps -e {REPO}`)")
    return personalvideo


def comfyui_path() -> Path:
    """The ComfyUI checkout to run: ``$COMFYUI_PATH`` or the one setup_env.sh installs."""
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI").resolve()
    if not (path / "main.py").is_file():
        raise FileNotFoundError(
            f"ComfyUI not found at {path} (no main.py). Run scripts/setup_env.sh, "
            "or set COMFYUI_PATH to a ComfyUI checkout."
        )
    return path


def import_comfyui(*args: str) -> Path:
    """Make ComfyUI's modules importable and parse its arguments (``device_args()`` and ``args``), as its main.py
    does first; returns the ComfyUI folder. ComfyUI is a folder of top-level modules (comfy, nodes, server, ...), not
    an installed package, so its folder goes first on sys.path: the one sys.path edit of the test and dev tools."""
    comfy_dir = comfyui_path()
    sys.argv = [str(comfy_dir / "main.py"), *device_args(), *args]
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    import comfy.options

    comfy.options.enable_args_parsing()
    return comfy_dir


class Graph:
    """An API-format prompt under construction: ``g.add("KSampler", model=..., ...)`` returns a link."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self._ids = itertools.count(1)

    def add(self, class_type: str, **inputs) -> list:
        node_id = str(next(self._ids))
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return [node_id, 0]

    def capture(self, value, key: str) -> None:
        self.add("PersonalVideoDevCapture", value=value, key=key)


def _start_aimdo() -> bool:
    """ComfyUI main.py's first DynamicVRAM step (0.33+: ``comfy_aimdo.control.init`` when the arguments allow it:
    not ``--cpu``, not ``--disable-dynamic-vram``, ...). Returns whether the second step is due."""
    import comfy.cli_args

    enables = getattr(comfy.cli_args, "enables_dynamic_vram", None)  # absent in 0.3.75
    if enables is None:
        return False
    args = comfy.cli_args.args
    if enables():
        import comfy_aimdo.control

        headroom = None if args.reserve_vram is None else int(args.reserve_vram * 1024 ** 3)
        comfy_aimdo.control.init(simple_vram_headroom=headroom, nvml_pressure=not args.disable_nvml_pressure)
    return bool(args.enable_dynamic_vram or enables())


def _enable_dynamic_vram() -> None:
    """ComfyUI main.py's second DynamicVRAM step: on a supported card (NVIDIA; AMD with ROCm 7.14+) every model
    gets a ``ModelPatcherDynamic`` (``CoreModelPatcher``) and the ops stream weights through comfy_aimdo."""
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy_aimdo.control
    from comfy.cli_args import args

    supported = mm.is_nvidia() or (mm.is_amd() and getattr(mm, "rocm_version", (0, 0)) >= (7, 14))
    if not (args.enable_dynamic_vram or supported) or mm.torch_version_numeric < (2, 8):
        log.warning("DynamicVRAM not enabled (unsupported device or torch < 2.8): classic ModelPatcher")
        return
    devices = ((d.index, int(args.vram_headroom * 1024 ** 3)) for d in mm.get_all_torch_devices())
    if not comfy_aimdo.control.init_devices(devices):
        log.warning("comfy-aimdo found no working device: classic ModelPatcher")
        return
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    log.info("DynamicVRAM enabled, as ComfyUI's main.py enables it")


class GraphError(RuntimeError):
    """A graph failed validation or execution; the message carries ComfyUI's own report."""


class ComfyRuntime:
    _instance: "ComfyRuntime | None" = None

    def __init__(self, base_dir: Path, comfy_dir: Path):
        self.base_dir = base_dir
        self.comfy_dir = comfy_dir
        self.executor = None

    @classmethod
    def boot(cls, base_dir: Path | str, with_dev_nodes: bool = True, cache: bool = False) -> "ComfyRuntime":
        """Start ComfyUI in-process (on the CPU unless $PERSONALVIDEO_COMFY_DEVICE=cuda) with ``base_dir`` as its
        base directory.

        ``base_dir`` gets ``custom_nodes/personalvideo`` (a link to this repository) and, with
        ``with_dev_nodes``, the test/demo stand-in nodes. Models go under ``base_dir/models``.
        ``cache`` turns on ComfyUI's classic node cache (benchmarks: only changed nodes re-run); without
        it every graph recomputes every node, so a test that runs the base model after a patched one
        really samples it again.
        """
        if cls._instance is not None:
            if Path(base_dir).resolve() != cls._instance.base_dir:
                raise RuntimeError("ComfyUI is already running in this process with another base directory")
            return cls._instance
        base_dir = Path(base_dir).resolve()
        custom = base_dir / "custom_nodes"
        custom.mkdir(parents=True, exist_ok=True)
        for sub in ("input", "output", "user", "models"):
            (base_dir / sub).mkdir(exist_ok=True)
        installed_pack()
        for entry in custom.iterdir():  # a link to this checkout under another name would load the pack twice
            if entry.is_symlink() and entry.name != PACK_NAME and entry.resolve() == REPO:
                entry.unlink()
        _link(custom / PACK_NAME, REPO)
        if with_dev_nodes:
            _link(custom / "personalvideo_dev_standins", DEV_NODES)

        comfy_dir = import_comfyui("--base-directory", str(base_dir), "--disable-api-nodes", "--database-url",
                                   "sqlite:///:memory:")
        dynamic_vram = _start_aimdo()  # before anything initialises CUDA, where main.py does it
        # Order matters (0.3.75): nodes.py puts comfy/ first on sys.path, and comfy/utils.py would then
        # shadow the top-level utils/ package that these imports need.
        import folder_paths  # noqa: F401
        import utils.extra_config  # noqa: F401
        import server
        import execution
        import nodes

        _load_pack_as_installed(folder_paths.get_folder_paths("custom_nodes"))
        if dynamic_vram:
            _enable_dynamic_vram()

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        prompt_server = server.PromptServer(loop)
        loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        if not any(k.startswith("PersonalVideo") for k in nodes.NODE_CLASS_MAPPINGS):
            raise RuntimeError(f"the {PACK_NAME} pack did not register any node: see the log above")
        module = nodes.NODE_CLASS_MAPPINGS["PersonalVideoTrainIdentityAdapter"].__module__
        if not module.startswith("personalvideo."):
            raise RuntimeError(f"ComfyUI loaded the pack's nodes as {module}, a second copy next to the installed "
                               "personalvideo package; ComfyUI's naming of custom node modules changed "
                               "(dev/comfy_runtime.py: _load_pack_as_installed)")
        rt = cls(base_dir, comfy_dir)
        rt.loop = loop
        cache_type = execution.CacheType.CLASSIC if cache else execution.CacheType.NONE
        rt.executor = execution.PromptExecutor(prompt_server, cache_type=cache_type,
                                               cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
        cls._instance = rt
        return rt

    @property
    def version(self) -> str:
        import comfyui_version

        return comfyui_version.__version__

    def run(self, prompt: dict) -> dict:
        """Validate and execute an API-format graph; returns the UI outputs by node id.

        Raises GraphError with ComfyUI's validation report or the failing node's exception message.
        """
        import execution

        prompt_id = str(uuid.uuid4())
        valid = self.loop.run_until_complete(execution.validate_prompt(prompt_id, prompt, None))
        ok, error, outputs, node_errors = valid[0], valid[1], valid[2], valid[3]
        if not ok:
            raise GraphError(f"invalid graph: {error}; node errors: {node_errors}")
        self.executor.execute(prompt, prompt_id, {"client_id": None}, outputs)
        if not self.executor.success:
            messages = [m for m in self.executor.status_messages if m[0] == "execution_error"]
            if messages:
                info = messages[-1][1]
                raise GraphError(
                    f"node {info.get('node_id')} ({info.get('node_type')}) failed: "
                    f"{info.get('exception_type')}: {info.get('exception_message')}"
                )
            raise GraphError(f"graph failed: {self.executor.status_messages}")
        return self.executor.history_result.get("outputs", {})

    def captured(self) -> dict:
        """What PersonalVideoDevCapture nodes received, by key (the stand-in pack's module dict)."""
        target = (DEV_NODES / "__init__.py").resolve()
        for module in list(sys.modules.values()):
            f = getattr(module, "__file__", None)
            if f and Path(f).resolve() == target:
                return module.CAPTURED
        raise RuntimeError("the dev stand-in nodes are not loaded (boot with with_dev_nodes=True)")

    def model_dir(self, kind: str) -> Path:
        path = self.base_dir / "models" / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


def _load_pack_as_installed(custom_node_folders: list[str]) -> None:
    """Make ComfyUI's import of the pack use the installed ``personalvideo`` modules.

    ComfyUI imports a custom node folder as a module named after the folder's path (``nodes.load_custom_node``:
    the path with "." written "_x_"), and the pack's entry point (``__init__.py``) imports its nodes relatively,
    ``.nodes.extension``, under that name. Registering the installed ``personalvideo.nodes.extension`` under the
    name ComfyUI will ask for makes ComfyUI run the folder's real ``__init__.py`` with the installed package's
    node classes: one copy of each module, the one tests import."""
    import personalvideo.nodes.extension as extension

    for folder in custom_node_folders:
        package = os.path.join(folder, PACK_NAME).replace(".", "_x_")
        sys.modules[f"{package}.nodes.extension"] = extension


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(target, target_is_directory=True)
