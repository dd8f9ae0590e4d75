"""The demo: a simulated pipeline and the native stack behind ``make up``."""
