"""Drivers: the only code that takes ``(config, workdir)`` and reads or writes files.

- :mod:`convjax.runs.workdir`: ``config.json``, ``restore(workdir)``, compatibility checks.
- :mod:`convjax.runs.train`: ``train_and_evaluate(config, workdir)``.
- :mod:`convjax.runs.metrics`: the metric files and the training-curves plot.
- :mod:`convjax.runs.sweeps`: the plain-vs-residual sweep and its figure.
- :mod:`convjax.runs.detect`, :mod:`convjax.runs.faces`, :mod:`convjax.runs.stylize`,
  :mod:`convjax.runs.visualize`, :mod:`convjax.runs.linear_probe`: the detection,
  faces, style-transfer, visualisation and linear-probe workflows
  (:mod:`convjax.runs.style_config`: the style-transfer config and its checks).
- :mod:`convjax.runs.images`: image files and figures; :mod:`convjax.runs.inference`:
  a restored model on image files; :mod:`convjax.runs.lock`: one run per workdir;
  :mod:`convjax.runs.console`: stage and progress lines.
"""
