"""Backbones: what a backbone is, and where it comes from.

- ``spec``: :class:`~keras_tlft.BackboneSpec` and :class:`~keras_tlft.BlockRule`, plain data.
- ``hookspecs``: the plugin API (pluggy markers and hook specifications).
- ``plugins``: the plugin manager (entry points loaded one by one, failures recorded).
- ``default_plugins``: keras-tlft's own heads and schedule presets, registered as a plugin would.
- ``registry``: every installed plugin's backbones, and name resolution.
- ``local``: backbones from local ``.keras`` files.
- ``preset_backbones``, ``adapters``: helpers for plugins' builders.
- ``testing``, ``plugin_template``: the plugin author's kit (conformance checks, ``new-plugin``).
"""
