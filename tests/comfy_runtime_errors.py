"""``with graph_error() as err:`` expects a graph to fail and keeps ComfyUI's message in ``err.message``."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from dev.comfy_runtime import GraphError


class _Caught:
    message = ""


@contextmanager
def graph_error():
    caught = _Caught()
    with pytest.raises(GraphError) as info:
        yield caught
    caught.message = str(info.value)
