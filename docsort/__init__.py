"""docsort: a cost-aware cascade of document classifiers."""

__version__ = "0.1.0"
