"""Support for testing skybatch and plugins of it: fault trials (kill a process group at
a chosen moment, compare what a run left with an uninterrupted reference)."""
