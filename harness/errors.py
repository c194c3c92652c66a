"""The user-input error every layer raises (kept apart so ``config`` and ``checks`` both use it)."""


class ConfigError(ValueError):
    """Bad user input in a configuration; the message names the valid choices."""
