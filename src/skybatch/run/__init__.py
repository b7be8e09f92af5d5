"""Carrying one pipeline over one data selection through every step (``skybatch run``)."""
