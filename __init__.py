"""PersonalVideo: identity-preserving video customisation (ICCV 2025) as ComfyUI nodes.

Only the entry point lives here; node modules import ComfyUI and torch when ComfyUI asks for them. The pack's
version is pyproject.toml's (training/version.py reads it).
"""


async def comfy_entrypoint():
    from .nodes.extension import PersonalVideoExtension

    return PersonalVideoExtension()
