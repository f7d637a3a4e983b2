"""What an identity adapter records (its model family, its gate start) checked against the nodes' inputs; shared
by the gated and the routed apply nodes."""

from __future__ import annotations

from ...training.adapter.files import recorded_gate_start
from ...training.adapter.gate import DEFAULT_GATE_START, check_gate_start
from .model import model_family

META_BASE_MODEL = "personalvideo.base_model"


def check_adapter_family(adapter, model) -> str:
    """The adapter's name for messages; ValueError when its file records another model family than ``model``'s."""
    source = getattr(adapter, "source", "adapter")
    wanted = getattr(adapter, "metadata", {}).get(META_BASE_MODEL)
    family = model_family(model)
    if wanted and wanted != family:
        raise ValueError(
            f"identity adapter {source}: made for a {wanted} model, but the model connected is {family}; "
            f"connect a {wanted} model or use an adapter trained on {family}.")
    return source


def resolve_gate_start(adapter, gate_start: float, override: bool) -> tuple[float, str]:
    """(gate start to use, where it came from): the override, the adapter's recorded value, or 0.75."""
    if override:
        return check_gate_start(gate_start), "override_gate_start on"
    recorded = recorded_gate_start(adapter)
    if recorded is None:
        return DEFAULT_GATE_START, "default: the adapter records none"
    return recorded, "recorded in the adapter"
