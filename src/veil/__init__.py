"""veil: a data-policy enforcement proxy for personalization APIs."""

__version__ = "0.1.0"
