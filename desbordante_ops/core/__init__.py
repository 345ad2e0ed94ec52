"""Shared by every area: settings, console output, polling, files, host checks."""
