"""The PersonalVideo method in plain torch: no ComfyUI imports here (tests/test_layout.py checks)."""
