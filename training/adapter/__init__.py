"""The isolated identity adapter: when it acts (gate rule), its trainable LoRA parameters, its files."""
