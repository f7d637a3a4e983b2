"""PersonalVideo: identity-preserving video customisation (ICCV 2025) as ComfyUI nodes.

Only the entry point lives here; node modules import ComfyUI and torch when ComfyUI asks for them.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes.extension import PersonalVideoExtension

    return PersonalVideoExtension()
