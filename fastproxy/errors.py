"""Errors and exit codes shared by the master, the workers and the CLI.

A config problem is reported as "FILE:LINE: [TABLE] KEY: MESSAGE" so an operator can jump straight to it;
`check` collects every problem in one ConfigErrors instead of stopping at the first.
A worker's exit code says why it ended, so the master's log can say it too (gunicorn's convention).
"""


class ConfigError(Exception):
    """One problem in a config file. line is None when it cannot be located (e.g. a missing table)."""

    def __init__(self, path, line, table, key, message):
        super().__init__(path, line, table, key, message)
        self.path = path
        self.line = line
        self.table = table
        self.key = key
        self.message = message

    def __str__(self):
        where = f"{self.path}:{self.line}" if self.line else self.path
        parts = [where + ":"]
        if self.table:
            parts.append(f"[{self.table}]")
        if self.key:
            parts.append(f"{self.key}:")
        parts.append(self.message)
        return " ".join(parts)


class ConfigErrors(Exception):
    """Every problem found in one config file, in file order."""

    def __init__(self, errors):
        self.errors = sorted(errors, key=lambda e: (e.line or 0))
        super().__init__("\n".join(str(e) for e in self.errors))


class HaltServer(Exception):
    """Raised inside the master to stop it, with the exit status to leave with."""

    def __init__(self, reason, exit_status=1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


# Worker exit codes: the master logs these names, and backs off on the ones that mean "will fail again".
EXIT_OK = 0          # stopped by a signal, as asked
EXIT_ERROR = 1       # an unexpected Python exception
EXIT_CONFIG = 3      # the config could not be used by the core (e.g. Core() refused it)
EXIT_BOOT = 4        # failed during start-up before serving (import error, bad fds)
EXIT_ORPHAN = 5      # the master was gone at start-up (parent-death check)

EXIT_NAMES = {
    EXIT_OK: "ok",
    EXIT_ERROR: "error",
    EXIT_CONFIG: "config error",
    EXIT_BOOT: "boot error",
    EXIT_ORPHAN: "master gone",
}


def exit_reason(code):
    """A short phrase for a worker exit code, for log lines."""
    return EXIT_NAMES.get(code, f"exit code {code}")
