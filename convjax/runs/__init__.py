"""Drivers: the only code that takes ``(config, workdir)`` and reads or writes files."""
