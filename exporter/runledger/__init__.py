"""runledger: observability and cost control for multi-tenant LLM agent pipelines."""

__version__ = "0.1.0"

__all__ = ["__version__"]
