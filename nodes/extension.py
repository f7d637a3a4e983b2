"""The ComfyExtension that registers every PersonalVideo node."""

from comfy_api.latest import ComfyExtension, io

from . import adapter_nodes, eval_nodes, prompt_nodes, reward_nodes, routing_nodes, train_nodes


class PersonalVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        nodes: list[type[io.ComfyNode]] = []
        for module in (adapter_nodes, routing_nodes, prompt_nodes, reward_nodes, train_nodes, eval_nodes):
            nodes.extend(module.NODES)
        return nodes
