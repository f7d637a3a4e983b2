"""Log lines name the pack's logger (``personalvideo.<module>``), also when ComfyUI imports the pack folder under its
file path, as nodes.load_custom_node does (0.3.75 to 0.33: ``sys.modules[module_path]``, dots replaced by ``_x_``)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_FOLDERS = ("training", "evaluation", "nodes", "scaleout")


def test_pack_imported_under_its_path_logs_under_personalvideo(tmp_path):
    # ComfyUI's load_custom_node, for a folder: the module name is the folder's path
    folder = tmp_path / "custom_nodes" / "PersonalVideo.v2"  # a dot in the folder name too
    folder.parent.mkdir()
    folder.symlink_to(REPO, target_is_directory=True)
    sys_module_name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(sys_module_name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_module_name] = module
    try:
        spec.loader.exec_module(module)
        reward = importlib.import_module(f"{sys_module_name}.training.identity.reward")
        assert reward.__name__.startswith(str(tmp_path).replace(".", "_x_"))  # __name__ is the path ...
        assert reward.log.name == "personalvideo.training.identity.reward"  # ... the logger is the pack's
    finally:
        for name in [n for n in sys.modules if n.startswith(sys_module_name)]:
            del sys.modules[name]


def test_every_module_logs_through_pack_logger():
    offenders = []
    for path in [p for folder in PACK_FOLDERS for p in (REPO / folder).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__"):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [], "use training.logs.pack_logger(__name__): under ComfyUI __name__ is a file path"
