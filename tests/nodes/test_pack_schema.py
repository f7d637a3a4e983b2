"""The pack as ComfyUI sees it: node ids, categories, tooltips, descriptions (V3 schemas)."""

PACK_NODES = {"PersonalVideoApplyIdentityAdapter", "PersonalVideoSaveIdentityAdapter",
              "PersonalVideoLoadIdentityAdapter"}


def test_pack_nodes_register_with_full_schemas(comfy):
    import nodes

    registered = {k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("PersonalVideo")
                  and not k.startswith("PersonalVideoDev")}
    assert PACK_NODES <= registered
    for node_id in registered:
        schema = nodes.NODE_CLASS_MAPPINGS[node_id].define_schema()
        assert schema.node_id == node_id
        assert schema.category.startswith("PersonalVideo")
        assert schema.description and len(schema.description) > 20, node_id
        assert schema.display_name and schema.display_name[0].isupper()
        for item in list(schema.inputs) + list(schema.outputs or []):
            assert item.tooltip, f"{node_id}: {item.id if hasattr(item, 'id') else item} has no tooltip"


def test_comfyui_runs_the_installed_package_one_copy_of_each_module(comfy):
    """ComfyUI loads the pack from custom_nodes/personalvideo; tests import the installed package personalvideo.
    Both are the same modules: the gate a node attaches is an instance of the class tests import."""
    import nodes
    from comfy.patcher_extension import WrappersMP

    from graphs import Graph, gated, install_models
    from personalvideo.nodes import adapter_nodes
    from personalvideo.nodes.runtime.gate import IdentityGate

    assert nodes.NODE_CLASS_MAPPINGS["PersonalVideoApplyIdentityAdapter"] is adapter_nodes.ApplyIdentityAdapter
    install_models(comfy)
    g = Graph()
    model = g.add("UNETLoader", unet_name="tiny_wan21.safetensors", weight_dtype="default")
    g.capture(gated(g, model, "identity_wan21.safetensors"), "model")
    comfy.run(g.nodes)
    patched = comfy.captured()["model"]
    wrappers = patched.wrappers[WrappersMP.APPLY_MODEL]
    gates = [w.__self__ for ws in wrappers.values() for w in ws if hasattr(w, "__self__")]
    assert gates and all(isinstance(gate, IdentityGate) for gate in gates), gates
