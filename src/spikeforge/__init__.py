"""spikeforge: train spiking neural networks on MNIST, Fashion-MNIST and N-MNIST."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spikeforge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
