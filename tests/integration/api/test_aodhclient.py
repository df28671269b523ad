"""The real python-aodhclient against the alarm API on a real port, with aodhclient's
own `aodh-noauth` keystoneauth plugin: it sends X-User-Id/X-Project-Id/X-Roles straight
to `--aodh-endpoint`, and opendoctor believes them from loopback (api.auth_mode
`trusted-headers`). The scenario is `tests/aodh_scenario.py`'s, which
`tests/openstack_bed/test_aodhclient_keystone.py` runs with the bed's real Keystone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aodhclient import client as aodh_client
from aodhclient import exceptions as aodh_errors
from aodhclient.noauth import AodhNoAuthPlugin
from keystoneauth1 import session as ks_session

from tests.aodh_scenario import AodhCommand, Login, Person
from tests.aodh_scenario import the_aodh_command_drives_the_whole_event_alarm_api as scenario
from tests.live import live_api

# Without Keystone, names are ids.
PEOPLE = {
    "a": Person("vnfm-a", "vnfm-a", "project-a", "project-a", "member"),
    "b": Person("vnfm-b", "vnfm-b", "project-b", "project-b", "member"),
    "admin": Person("operator", "operator", "admin", "admin", "admin"),
}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[str]:
    with live_api(tmp_path) as url:
        yield url


def noauth(url: str) -> Login:
    """`aodh` options that claim to be the person, at opendoctor's URL."""

    def login(person: Person) -> tuple[list[str], dict[str, str]]:
        options = ["--os-auth-type", "aodh-noauth", "--aodh-endpoint", url]
        claims = ["--user-id", person.user_id, "--project-id", person.project_id]
        return [*options, *claims, "--roles", person.roles], {}

    return login


def test_the_aodh_command_drives_the_whole_event_alarm_api(live: str) -> None:
    scenario(AodhCommand(PEOPLE, noauth(live)))


def test_the_python_client_hears_that_only_event_alarms_are_served(live: str) -> None:
    """aodhclient's Client, built on a keystoneauth session as services build it."""
    a = PEOPLE["a"]
    auth = AodhNoAuthPlugin(a.user_id, a.project_id, a.roles, live)
    client = aodh_client.Client("2", session=ks_session.Session(auth=auth))
    threshold = {
        "name": "cpu-high",
        "type": "threshold",
        "threshold_rule": {"meter_name": "cpu_util", "threshold": 90.0},
    }
    with pytest.raises(aodh_errors.BadRequest) as raised:
        client.alarm.create(threshold)
    assert "only 'event' alarms are served" in str(raised.value)
    assert client.alarm.list() == []
