"""Serving: the image-to-masks program exported once and run without the model code.

``load(path)`` (:mod:`yolact_jax.serving.runtime`) needs only numpy plus jax (StableHLO) or
onnxruntime (ONNX); building artefacts (:mod:`yolact_jax.serving.export`,
:mod:`yolact_jax.serving.onnx_export`, ``scripts/export.py``) needs the model code. Importing
this package imports neither.
"""

from yolact_jax.serving.artefact import (ArtefactError, ContractError, InputError, PlatformError,
                                         SerializationVersionError, ServingError)
from yolact_jax.serving.runtime import ServedModel, load

__all__ = ['load', 'ServedModel', 'ServingError', 'ArtefactError', 'PlatformError',
           'SerializationVersionError', 'ContractError', 'InputError']
