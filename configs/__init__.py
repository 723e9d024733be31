"""convjax's experiment configs: one ``get_config(arg)`` per module, each with its run
command and expected result in its docstring.

Shipped with convjax, so they import anywhere (``from configs import lenet5_digits``);
the scripts take them by path: ``--config=configs/lenet5_digits.py:smoke``.
"""
