"""ComfyUI workflow files (the UI format users drag in) <-> API-format prompts (what the executor runs).

``ui_to_api`` is how the tests and the demo execute the files in ``workflows/``; ``api_to_ui`` is how those
files are written (dev/make_workflows.py). Both read node definitions from the running ComfyUI
(``INPUT_TYPES()``), so a workflow that names a node type or an input that does not exist fails here with
a message naming the node.

Widget values in the UI format are positional, in the order of the node's widget inputs (required, then
optional). The frontend adds one extra value after INT inputs named ``seed``/``noise_seed`` or marked
``control_after_generate`` (the "control after generate" widget) and after inputs with an upload button
(``image_upload``, ``video_upload``, ``audio_upload``).
"""

from __future__ import annotations


PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = {"Note", "MarkdownNote"}


def node_inputs(class_type: str) -> list[tuple[str, object, dict, bool]]:
    """[(name, type, options, required)] of a node type, from the running ComfyUI."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        raise KeyError(class_type)
    spec = cls.INPUT_TYPES()
    out = []
    for section, required in (("required", True), ("optional", False)):
        for name, entry in (spec.get(section) or {}).items():
            typ = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, typ, options, required))
    return out


def is_widget(typ) -> bool:
    return isinstance(typ, (list, tuple)) or typ in PRIMITIVES


def widget_default(typ, options: dict):
    """The value the frontend gives a widget nobody set: its default, else a combo's first option."""
    if "default" in options:
        return options["default"]
    choices = typ if isinstance(typ, (list, tuple)) else options.get("options") or []
    return choices[0] if choices else None


def extra_widget_values(name: str, typ, options: dict) -> int:
    """Values the frontend stores after this widget's own (control_after_generate, upload button)."""
    if typ == "INT" and (name in ("seed", "noise_seed") or options.get("control_after_generate")):
        return 1
    if any(options.get(k) for k in ("image_upload", "video_upload", "audio_upload")):
        return 1
    return 0


def _where(node: dict) -> str:
    title = node.get("title")
    return f"node {node['id']} ({node.get('type')}{', ' + repr(title) if title else ''})"


def ui_to_api(workflow: dict) -> dict:
    """Convert a UI-format workflow to an API prompt; ValueError naming the node for what cannot be run."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        class_type = node.get("type")
        if class_type in NOTE_TYPES or node.get("mode", 0) in (2, 4):  # notes, muted and bypassed nodes
            continue
        try:
            spec = node_inputs(class_type)
        except KeyError:
            raise ValueError(f"{_where(node)}: unknown node type {class_type!r}; install the pack that provides "
                             "it or replace the node") from None
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links.get(slot["link"])
                if link is None:
                    raise ValueError(f"{_where(node)}: input {slot['name']!r} refers to missing link {slot['link']}")
                linked[slot["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        inputs, pos = {}, 0
        for name, typ, options, required in spec:
            if is_widget(typ):
                if name in linked:  # a widget converted to a socket still keeps its value slot
                    inputs[name] = linked.pop(name)
                    pos += 1 + extra_widget_values(name, typ, options)
                    continue
                if pos < len(values):
                    inputs[name] = values[pos]
                    pos += 1 + extra_widget_values(name, typ, options)
                elif required:
                    raise ValueError(f"{_where(node)}: no value for widget {name!r}")
            elif name in linked:
                inputs[name] = linked.pop(name)
            elif required:
                raise ValueError(f"{_where(node)}: required input {name!r} is not connected")
        if linked:
            raise ValueError(f"{_where(node)}: {class_type} has no input named {sorted(linked)[0]!r}")
        prompt[str(node["id"])] = {"class_type": class_type, "inputs": inputs}
    return prompt


def api_to_ui(prompt: dict, titles: dict[str, str] | None = None, notes: list[tuple[str, tuple[int, int]]] = (),
              columns: dict[str, int] | None = None) -> dict:
    """A UI-format workflow for an API prompt whose node ids are names (laid out in columns by ``columns``)."""
    import nodes

    titles, columns = titles or {}, columns or {}
    ids = {key: i + 1 for i, key in enumerate(prompt)}
    ui_nodes, ui_links = [], []
    rows: dict[int, int] = {}
    for key, node in prompt.items():
        class_type = node["class_type"]
        cls = nodes.NODE_CLASS_MAPPINGS[class_type]
        return_types = list(getattr(cls, "RETURN_TYPES", ()))
        return_names = list(getattr(cls, "RETURN_NAMES", None) or return_types)
        col = columns.get(key, 0)
        y = rows.get(col, 60)
        inputs, widgets = [], []
        for name, typ, options, required in node_inputs(class_type):
            value = node["inputs"].get(name)
            if is_widget(typ):
                if isinstance(value, list):
                    raise ValueError(f"{key}: widget {name!r} linked; not supported by this writer")
                if value is None and not required:
                    # the frontend stores every widget, by position: an unset optional one keeps its default,
                    # so the widgets after it stay where the node's definition puts them
                    value = widget_default(typ, options)
                widgets.append(value)
                if extra_widget_values(name, typ, options):
                    widgets.append("fixed" if typ == "INT" else "image")
            elif isinstance(value, list):
                link_id = len(ui_links) + 1
                src = value[0]
                src_types = list(getattr(nodes.NODE_CLASS_MAPPINGS[prompt[src]["class_type"]], "RETURN_TYPES", ()))
                ui_links.append([link_id, ids[src], value[1], ids[key], len(inputs), src_types[value[1]]])
                inputs.append({"name": name, "type": typ, "link": link_id})
            elif required:
                raise ValueError(f"{key}: required input {name!r} missing")
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(return_names, return_types))]
        entry = {"id": ids[key], "type": class_type, "pos": [60 + 380 * col, y], "size": [340, 120],
                 "flags": {}, "order": ids[key] - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
                 "properties": {"Node name for S&R": class_type}, "widgets_values": widgets}
        if key in titles:
            entry["title"] = titles[key]
        ui_nodes.append(entry)
        rows[col] = y + 60 + 26 * (len(inputs) + len(widgets))
    by_id = {n["id"]: n for n in ui_nodes}
    for link in ui_links:
        by_id[link[1]]["outputs"][link[2]]["links"].append(link[0])
    next_id = len(ui_nodes) + 1
    for text, (x, y) in notes:
        ui_nodes.append({"id": next_id, "type": "Note", "pos": [x, y], "size": [420, 260], "flags": {},
                         "order": next_id - 1, "mode": 0, "inputs": [], "outputs": [],
                         "properties": {"text": ""}, "widgets_values": [text]})
        next_id += 1
    return {"last_node_id": next_id - 1, "last_link_id": len(ui_links), "nodes": ui_nodes, "links": ui_links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}
