"""Errors that end a command with one clear line and a documented exit code.

Exit codes (also in the README):
  0  every surface ESamp needs matched a known contract (or a compatible drift)
  1  unhandled drift: a surface is missing or shows an unknown contract
  2  bad input: no vLLM found, not a vLLM tree, broken wheel, unknown release,
     unparsable surface file, a file that is not a regular file or is over a limit,
     an output path that cannot be written, an empty value, a bad option or usage
  3  fetch failed: pip could not reach the package index
  4  live check failed: the installed vLLM could not be imported or the
     tiny engine could not run
"""

EXIT_OK = 0
EXIT_UNHANDLED_DRIFT = 1
EXIT_BAD_INPUT = 2
EXIT_FETCH_FAILED = 3
EXIT_LIVE_FAILED = 4


class DriftcheckError(Exception):
    """Base: carries the exit code the CLI ends with."""

    exit_code = EXIT_BAD_INPUT


class BadInput(DriftcheckError):
    exit_code = EXIT_BAD_INPUT


class FetchFailed(DriftcheckError):
    exit_code = EXIT_FETCH_FAILED


class LiveCheckFailed(DriftcheckError):
    exit_code = EXIT_LIVE_FAILED
