"""House rules that can be checked mechanically."""

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
                 "execution", "node_helpers"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_training_and_evaluation_are_plain_torch():
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & COMFY_MODULES)
                 for folder in ("training", "evaluation") for p in (REPO / folder).rglob("*.py")
                 if _imports(p) & COMFY_MODULES}
    assert offenders == {}, f"training/ and evaluation/ must not import ComfyUI modules: {offenders}"


# The standalone scale-out trainer and its libraries (requirements-train.txt): the node pack stays light and never
# needs them installed.
SCALEOUT_ONLY = {"scaleout", "diffusers", "peft", "accelerate", "transformers"}


def test_node_pack_never_imports_the_scaleout_trainer_or_its_libraries():
    files = [REPO / "__init__.py"] + [p for folder in ("nodes", "training", "evaluation")
                                      for p in (REPO / folder).rglob("*.py")]
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & SCALEOUT_ONLY) for p in files
                 if _imports(p) & SCALEOUT_ONLY}
    assert offenders == {}, f"the node pack must not import the scale-out trainer's modules: {offenders}"
    # relative imports too: `from ..scaleout import x` has level 2 and module "scaleout"
    relative = [str(p.relative_to(REPO)) for p in files for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").split(".")[0] == "scaleout"]
    assert relative == []


def test_files_stay_readable_in_one_sitting():
    """House style: a Python file past ~300 lines has two jobs (the before-stop check uses the same bound)."""
    long_files = {str(p.relative_to(REPO)): n for p in REPO.rglob("*.py")
                  if not {".venv", ".comfyui", ".git", ".cache"} & set(p.relative_to(REPO).parts)
                  and (n := len(p.read_text().splitlines())) > 300}
    assert long_files == {}


def test_only_paths_module_uses_folder_paths():
    users = sorted(str(p.relative_to(REPO)) for p in (REPO / "nodes").rglob("*.py") if "folder_paths" in _imports(p))
    assert users == ["nodes/paths.py"]


def test_entry_point_is_light_and_v3_only():
    source = (REPO / "__init__.py").read_text()
    assert "comfy_entrypoint" in source and "NODE_CLASS_MAPPINGS" not in source
    assert _imports(REPO / "__init__.py") <= {"__future__"}


TRAIN_EXTRA = {"scaleout", "diffusers", "peft", "accelerate", "transformers"}


def test_scaleout_stays_outside_the_node_pack():
    """The node pack (entry point, nodes/, training/, evaluation/) never imports the scale-out trainer or its extra
    dependencies, and scaleout/ runs without ComfyUI."""
    pack = [REPO / "__init__.py",
            *(p for folder in ("nodes", "training", "evaluation") for p in (REPO / folder).rglob("*.py"))]
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & TRAIN_EXTRA)
                 for p in pack if _imports(p) & TRAIN_EXTRA}
    assert offenders == {}, f"the node pack must not import the scale-out trainer's dependencies: {offenders}"
    comfy_users = {str(p.relative_to(REPO)): sorted(_imports(p) & COMFY_MODULES)
                   for p in (REPO / "scaleout").rglob("*.py") if _imports(p) & COMFY_MODULES}
    assert comfy_users == {}, f"scaleout/ must not import ComfyUI modules: {comfy_users}"


PACKAGE_FOLDERS = ("evaluation", "nodes", "scaleout", "training")  # the repository root is the package personalvideo


def test_pyproject_lists_every_package_folder():
    """``pip install .`` ships the packages pyproject.toml lists: every folder of the package with an __init__.py
    (a subpackage left out would be missing from an installed copy), and none of tests/, dev/ or benchmarks/."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"personalvideo"} | {".".join(("personalvideo", *p.parent.relative_to(REPO).parts))
                                 for folder in PACKAGE_FOLDERS for p in (REPO / folder).rglob("__init__.py")}
    assert listed == found


def test_node_schema_files_share_only_types_and_runtime():
    """nodes/ holds node schemas (one file per group of nodes) over runtime/ (what they run in ComfyUI): a schema
    file imports no other schema file, and runtime/ imports none (only extension.py, the registry, imports them)."""
    schemas = {p.stem for p in (REPO / "nodes").glob("*_nodes.py")}
    offenders = []
    for path in [*(REPO / "nodes").glob("*.py"), *(REPO / "nodes" / "runtime").glob("*.py")]:
        if path.name == "extension.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                names = [(node.module or "").split(".")[-1]] + [a.name for a in node.names]
                offenders += [f"{path.relative_to(REPO)} imports {n}" for n in names if n in schemas]
    assert offenders == []


def test_readme_layout_names_every_folder_and_loop_file():
    """The README's Layout section is the map of the tree: every folder of it, and every file of training/loop/."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)] if "\n## " in layout[1:] else layout
    # build/: what `pip install .` leaves behind (gitignored), not a folder of the tree
    folders = [f"{p.name}/" for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
               and p.name != "build" and any(p.rglob("*.py")) or p.name == "workflows"]
    folders += [f"{sub}/" for sub in ("identity", "semantic", "adapter", "loop", "runtime", "backends", "export")]
    loop_files = [p.stem for p in (REPO / "training" / "loop").glob("*.py") if p.stem != "__init__"]
    missing = [name for name in folders + loop_files if name not in layout]
    assert missing == []


def test_the_node_pack_needs_no_tomllib():
    """ComfyUI runs on Python 3.10, whose standard library has no tomllib (pyproject: requires-python >= 3.10): the
    node pack (entry point, nodes/, training/, evaluation/) never imports it; scaleout/config.py falls back to tomli,
    which the train extra installs on 3.10."""
    pack = [REPO / "__init__.py", *(p for folder in ("nodes", "training", "evaluation")
                                    for p in (REPO / folder).rglob("*.py"))]
    assert [str(p.relative_to(REPO)) for p in pack if "tomllib" in _imports(p)] == []
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.10"
    config = (REPO / "scaleout" / "config.py").read_text()
    assert "except ModuleNotFoundError:" in config and "import tomli as tomllib" in config
