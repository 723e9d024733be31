"""Neural style transfer's array math: colour preservation, pixel optimisers, start images.

The feature network is :mod:`convjax.models.features`, the costs
:mod:`convjax.losses.style`, the task :mod:`convjax.tasks.style` and the driver
:func:`convjax.runs.stylize.stylize`.
"""
