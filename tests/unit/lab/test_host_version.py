"""A lab host's version string: what the spec and the staged-version API accept."""

from __future__ import annotations

import argparse

import pytest

from opendoctor.lab.spec import LabSpec, add_spec_arguments, spec_from_args, version_problem


@pytest.mark.parametrize("good", ["1", "2024.1", "v" * 64, "17.0.0 (caracal) + hotfix #3"])
def test_printable_strings_of_1_to_64_characters_are_versions(good: str) -> None:
    assert version_problem(good) is None


@pytest.mark.parametrize("bad", ["", "v" * 65, "1.0\n", "1.0\x00", "\t", 1.0, None])
def test_anything_else_is_not(bad: object) -> None:
    assert version_problem(bad) is not None


def test_the_spec_says_what_hosts_run_at_start() -> None:
    assert LabSpec().host_version == "1.0"
    with pytest.raises(ValueError, match="host_version"):
        LabSpec(host_version="")
    spec = LabSpec(host_version="2024.1 rc")
    assert LabSpec.from_dict(spec.to_dict()) == spec
    parser = argparse.ArgumentParser()
    add_spec_arguments(parser)
    assert spec_from_args(parser.parse_args(spec.to_args())) == spec
