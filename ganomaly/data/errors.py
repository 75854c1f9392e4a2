"""The data layer's one error type."""


class DataError(ValueError):
    """Data is missing, malformed or does not match a run; the message says what to do."""
