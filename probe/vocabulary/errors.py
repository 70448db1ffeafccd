"""The probe's one exception root. Every error the probe expects is a `ProbeError`, said in one line
that names its place (`targets.txt:17: ...`), never with a traceback; anything else reaching the
command line is a bug (exit 70). The three kinds decide the exit code (docs/operating.md):

- `InputError`: a file or value the user gave is wrong (a targets file, a resolver URL, roots, a
  catalog, an AS table, a results file). Nothing was done: exit 2.
- `ConfigError`: the configuration file is wrong. Exit 2.
- `NetworkError`: a network step the user asked for failed as a whole (an upload). Exit 7.

`ProbeError` itself covers the rest the probe expects: another run holds the lock, no writable state
directory. Each is still a class of its own where its exit code differs.
"""


class ProbeError(Exception):
    """An error the probe expects: its message names the place, and is all the user needs to see."""


class InputError(ProbeError, ValueError):
    """A file or value the user gave cannot be used (nothing was measured)."""


class ConfigError(InputError):
    """The configuration file is wrong: each problem names the file, the line and the key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class NetworkError(ProbeError):
    """A network step the user asked for failed as a whole."""
