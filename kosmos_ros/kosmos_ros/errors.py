# Copyright 2026 kosmos_ros contributors
# SPDX-License-Identifier: Apache-2.0
"""Exceptions raised by the kosmos_ros core. Each carries the exact reason in its message."""


class KosmosError(Exception):
    """Base class of every error the kosmos_ros core raises on purpose."""


class ModelLoadError(KosmosError):
    """The model or processor could not be loaded (files, format, options, device, memory)."""


class PromptError(KosmosError, ValueError):
    """A prompt is empty, too long, malformed or not valid text."""


class RegionError(KosmosError, ValueError):
    """A region (pixel box) is not finite, degenerate, outside the image or has no phrase."""


class ImageError(KosmosError, ValueError):
    """An image cannot be used: empty, inconsistent, corrupt or of an unsupported encoding."""


class InferenceError(KosmosError):
    """The model failed while running a query."""


class OutOfMemoryError(InferenceError):
    """The device ran out of memory during inference; the engine freed its caches."""


class InferenceCancelled(KosmosError):
    """The caller asked to stop (e.g. an action goal was cancelled)."""


def reason(exc: BaseException) -> str:
    """One line saying why: the message of a project error, else also the exception type."""
    text = ' '.join(str(exc).split()) or '(no message)'
    return text if isinstance(exc, (KosmosError, ValueError)) else \
        f'{type(exc).__name__}: {text}'
