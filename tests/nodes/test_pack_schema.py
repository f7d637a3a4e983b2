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
