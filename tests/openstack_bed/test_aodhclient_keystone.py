"""The real `aodh` command against opendoctor in `api.auth_mode = "keystone"`, as a VNF
manager runs it on a real cloud: password auth against the bed's Keystone, no
`--aodh-endpoint` (aodhclient finds opendoctor in the catalog, service type
`alarming`), the project and roles from the token. The scenario is
`tests/aodh_scenario.py`'s, which `tests/integration/api/test_aodhclient.py` runs with
aodhclient's noauth plugin.

Two tenants are made in the bed for it, `project-a` and `project-b` with users
`vnfm-a` and `vnfm-b` (role `member`, a new random password each run); the admin is
the bed's own.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from openstack.connection import Connection
from openstack.identity.v3._proxy import Proxy as IdentityV3
from openstack.identity.v3.project import Project
from openstack.identity.v3.user import User

from opendoctor.lab.openstack.spec import BedSpec
from tests.aodh_scenario import AodhCommand, Login, Person
from tests.aodh_scenario import the_aodh_command_drives_the_whole_event_alarm_api as scenario
from tests.openstack_bed.conftest import admin_auth, identity

pytestmark = [pytest.mark.openstack, pytest.mark.slow, pytest.mark.timeout(600)]

DOMAIN = "default"
REGION = "RegionOne"
TENANTS = {"a": ("vnfm-a", "project-a"), "b": ("vnfm-b", "project-b")}  # who: (user, project)


@pytest.fixture
def all_computes_up() -> None:
    """Replaces the bed's: this test needs no compute host, and leaves them as whoever
    shares the bed set them."""


def _project(keystone: IdentityV3, name: str, made: list[Project]) -> Project:
    for found in keystone.projects(name=name, domain_id=DOMAIN):
        return found  # someone's, or left by an earlier run: used, and left
    project = keystone.create_project(name=name, domain_id=DOMAIN)
    made.append(project)
    return project


def _user(keystone: IdentityV3, name: str, password: str, project: Project) -> User:
    for found in keystone.users(name=name, domain_id=DOMAIN):
        return keystone.update_user(found, password=password)  # an earlier run's
    return keystone.create_user(
        name=name, password=password, domain_id=DOMAIN, default_project_id=project.id
    )


@pytest.fixture
def people(openstack_bed: BedSpec, conn: Connection) -> Iterator[dict[str, Person]]:
    """The two tenants, made (or taken over) now, and the bed's admin. The users go
    afterwards, and the projects this run made."""
    keystone = identity(conn)
    member = keystone.find_role("member", ignore_missing=False)
    made: list[Project] = []
    users: list[User] = []
    try:
        people: dict[str, Person] = {}
        for who, (user_name, project_name) in TENANTS.items():
            project = _project(keystone, project_name, made)
            password = secrets.token_urlsafe(18)
            user = _user(keystone, user_name, password, project)
            users.append(user)
            keystone.assign_project_role_to_user(project, user, member)
            people[who] = Person(user_name, user.id, project_name, project.id, "member", password)
        admin = admin_auth(openstack_bed)
        people["admin"] = Person(
            admin["username"],
            str(conn.current_user_id),
            admin["project_name"],
            str(conn.current_project_id),
            "admin",
            admin["password"],
        )
        yield people
    finally:
        for user in users:
            keystone.delete_user(user, ignore_missing=True)
        for project in made:
            keystone.delete_project(project, ignore_missing=True)


def password_auth(auth_url: str) -> Login:
    """`aodh` options for the person's password login through the catalog; the password
    itself in the environment (OS_PASSWORD), never on the command line."""

    def login(person: Person) -> tuple[list[str], dict[str, str]]:
        options = [
            "--os-auth-type",
            "password",
            "--os-auth-url",
            auth_url,
            "--os-username",
            person.user,
            "--os-project-name",
            person.project,
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
            "--os-region-name",
            REGION,
        ]
        return options, {"OS_PASSWORD": person.password}

    return login


def test_the_aodh_command_drives_the_whole_event_alarm_api(
    keystone_api: str, people: dict[str, Person], openstack_bed: BedSpec
) -> None:
    scenario(AodhCommand(people, password_auth(admin_auth(openstack_bed)["auth_url"])))
