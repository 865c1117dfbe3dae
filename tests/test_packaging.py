"""The project files as tools and new users read them: pyproject.toml (no setuptools warning), the README."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_expression_that_the_required_setuptools_understands() -> None:
    data = tomllib.loads(PYPROJECT.read_text())
    # A table ({ text = "MIT" }) makes setuptools >= 77 print a SetuptoolsDeprecationWarning
    # on every build and install; the SPDX string is the PEP 639 form (License-Expression: MIT).
    license = data["project"]["license"]
    assert isinstance(license, str), license
    assert canonicalize_license_expression(license) == license
    # setuptools before 77 rejects a string license: the build must not pick one.
    (setuptools,) = [Requirement(r) for r in data["build-system"]["requires"] if Requirement(r).name == "setuptools"]
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")


def test_readme_opens_with_the_two_commands_and_says_the_test_command_uses_apt() -> None:
    readme = (PYPROJECT.parent / "README.md").read_text()
    first = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[0] for line in first] == ["./scripts/serve", "./scripts/test"]
    after = readme.split("```", 2)[2].strip().split("\n\n", 1)[0]
    # A new user must know before running it that ./scripts/test may install Debian packages.
    assert "./scripts/test" in after and "apt-get" in after and "sudo" in after and "root" in after
