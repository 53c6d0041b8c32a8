"""Runs one pytest file as a Bazel py_test (py_test needs a script for `main`).

Bazel passes the test file as the argument (see pytest_test in tools/defs.bzl).
The runner maps Bazel's test protocol onto pytest: per-case results go to
$XML_OUTPUT_FILE, `bazel test --test_filter=EXPR` becomes `-k EXPR`, and the
cache is off because runfiles are read-only.
"""
import os
import sys

import pytest


def pytest_args(argv: list[str], env: dict[str, str]) -> list[str]:
    """pytest's command line for the files in `argv` under Bazel's environment `env`."""
    args = [*argv, "-q", "-p", "no:cacheprovider"]
    if env.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={env['XML_OUTPUT_FILE']}")
    if env.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", env["TESTBRIDGE_TEST_ONLY"]]
    return args


if __name__ == "__main__":
    sys.exit(pytest.main(pytest_args(sys.argv[1:], dict(os.environ))))
