"""skybatch: batch processing of astronomical survey campaigns on the LSST Butler."""

__version__ = "0.1.0"
