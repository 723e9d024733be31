"""What a trained ConvNet computes, for a model and its data: model-aware analysis.

Between the drivers (:mod:`convjax.runs`) and the training machinery: these modules
take a :class:`~convjax.analysis.network.Network` (a Flax model, its variables and a
dataset config) and return arrays and figures; they read and write no files.

- :mod:`convjax.analysis.network`: the :class:`Network` looked at, the zoo's dataset.
- :mod:`convjax.analysis.plan`: layers, units and receptive fields checked before
  anything compiles (:func:`make_plan`); the first layer's kernel.
- :mod:`convjax.analysis.mining`: the top-k images of every unit over the eval split,
  and their patches cropped at the receptive field.
- :mod:`convjax.analysis.attributions`: feature maps, and every attribution method
  over a batch as arrays and as one figure.
- :mod:`convjax.analysis.maximise`: activation maximisation through the generic step.

The array math underneath is :mod:`convjax.viz`; the driver that writes the pictures
of a workdir or zoo model is :mod:`convjax.runs.visualize`.
"""
