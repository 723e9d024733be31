"""Drivers: the only code that takes ``(config, workdir)`` and reads or writes files.

- :mod:`convjax.runs.workdir`: ``config.json``, ``restore(workdir)``.
- :mod:`convjax.runs.train`: ``train_and_evaluate(config, workdir)``.
"""
