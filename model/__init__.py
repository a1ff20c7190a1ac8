"""The char-LSTM toolkit: character set, network, training, checkpoints, evaluation, sampling.

Imports go one way: this package never imports ``corpora`` or ``bot``. ``__version__`` is the
installed distribution's (``charbot`` in pyproject.toml), so there is one version number to bump.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("charbot")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
