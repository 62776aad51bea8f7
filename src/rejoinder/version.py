"""The release, where low layers can read it without importing the package's API."""

__version__ = "0.1.0"
