"""The base layer every package imports: settings, the exception tree, logs, vocabulary, messaging."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("docsort")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0"
