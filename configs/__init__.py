"""The presets: one module per preset, each defining ``get_config() -> YolactConfig``.

The file names are the preset names (``yolact_jax.config.PRESETS`` lists them from this folder);
``yolact_jax.config.get_config('yolact_base')`` imports ``yolact_jax.configs.yolact_base`` and
validates what its ``get_config()`` returns. ``yolact_jax/configs`` is a link to this folder, so
the presets import as ``yolact_jax.configs.<name>`` from a source checkout (``PYTHONPATH``), an
editable install and a wheel alike. A derived preset imports its parent and replaces fields.
"""
