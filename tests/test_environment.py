"""The set-up: environment.yml carries exactly the pins of requirements.lock."""

from tools.sync_env import ROOT, render


def test_environment_yml_matches_requirements_lock():
    assert (ROOT / "environment.yml").read_text() == render(), \
        "environment.yml is out of date: run `python -m tools.sync_env`"
