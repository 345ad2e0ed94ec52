"""What a test's `invoke.MockContext` was asked to run."""

from __future__ import annotations

from typing import Any, cast
from unittest.mock import Mock

from invoke import MockContext


def calls(c: MockContext) -> list[Any]:
    """The recorded `c.run` calls: MockContext wraps `run` in a Mock, which its typing omits."""
    return cast(Mock, c.run).call_args_list


def commands(c: MockContext) -> list[str]:
    """The command lines given to `c.run`, in order."""
    return [call.args[0] for call in calls(c)]
