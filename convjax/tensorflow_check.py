"""TensorFlow, which convjax's input pipeline runs on, looked for before it is imported.

convjax does not pin a TensorFlow distribution: pip cannot require "``tensorflow`` or
``tensorflow-cpu``", and requiring one installs it beside the other (Colab ships
``tensorflow``; two distributions would then own the same files). An installed
``tensorflow``, ``tensorflow-cpu`` or other build is used as it is; where there is none,
``pip install "convjax[tf]"`` (in a checkout ``pip install -e ".[tf]"``) adds the CPU
build, which is all the input pipeline uses. This module imports neither.
"""

from __future__ import annotations

import importlib.util

MISSING = (
    "convjax reads its data with TensorFlow, which is not installed here: "
    'pip install tensorflow-cpu (or "convjax[tf]"; in a checkout pip install -e ".[tf]"); '
    "an installed tensorflow or tensorflow-cpu is used as it is"
)


class TensorFlowMissing(ImportError):
    """No TensorFlow distribution is installed; a script prints :data:`MISSING` as one line."""

    exit_code = 1


def require_tensorflow() -> None:
    """Raises :class:`TensorFlowMissing` (what to install) when ``tensorflow`` is absent."""
    if importlib.util.find_spec("tensorflow") is None:
        raise TensorFlowMissing(MISSING)
