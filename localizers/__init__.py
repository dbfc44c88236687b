"""Shipped localizer definitions (TOML) and stimuli, installed as ``topocli.localizers``."""
