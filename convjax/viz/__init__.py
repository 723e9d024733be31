"""What ConvNets learn, as array math (no files, no training, no Flax models).

- :mod:`convjax.viz.geometry`: exact receptive fields traced from any function's jaxpr;
  windows of units, crops with padding masks.
- :mod:`convjax.viz.mining`: streaming per-unit top-k over a dataset (jit, pmap, shard_map).
- :mod:`convjax.viz.attribution`: saliency, deconvnet, guided backprop, Grad-CAM,
  occlusion, integrated gradients.
- :mod:`convjax.viz.activation_max`: transforms and terms of activation maximisation
  (the task itself is :mod:`convjax.tasks.activation_max`).
- :mod:`convjax.viz.grids`: filter, feature-map and patch grids; the labelled filter figure.
- :mod:`convjax.viz.rewrite`: evaluating a jaxpr with operations swapped or values nudged.

The same analysis for a Flax model and its data (plan, mining over a dataset,
attributions of a batch) is :mod:`convjax.analysis`; the driver that reads a workdir
and writes the pictures is :mod:`convjax.runs.visualize`.
"""
