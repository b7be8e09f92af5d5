"""The ``skybatch`` command line: thin click commands over the drivers.

Exceptions are mapped to exit codes once, in :func:`skybatch.cli.main.main`.
"""
