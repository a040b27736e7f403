"""The one base class of every error a user can cause (bad config, file, path, checkpoint).

The command line (`sassid_jax/cli.py`, behind `launch.py` and `sassid`) turns a
`UserInputError` into one line on stderr and exit code 2; any other exception is a bug and
keeps its traceback. Subclasses live next to the code that raises them (e.g.
`io.checkpoints.CheckpointInputError`); each message is one line that names the file or
config field and says what is wrong.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Bad input from the user; str() is one line naming the file or field."""


class ConfigError(UserInputError, ValueError):
    """A config field with a bad value; str() names the dotted field and the value."""
