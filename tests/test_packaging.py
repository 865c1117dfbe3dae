"""pyproject.toml as setuptools reads it: no deprecation warning on every install."""

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
