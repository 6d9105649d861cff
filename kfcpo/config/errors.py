"""The one error type that configuration problems surface as."""


class ConfigError(ValueError):
    """A config problem: the message is one line and names the key path."""
