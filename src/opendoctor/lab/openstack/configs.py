"""The services' configuration files, written into the bed's `etc/` (mode 600: they
hold the service users' passwords).

Only what differs from upstream's defaults is set; each choice says why.
"""

from __future__ import annotations

import configparser
import io
import shutil
from pathlib import Path

from opendoctor.lab.openstack.spec import REGION, BedSpec, Secrets, write_private

Sections = dict[str, dict[str, str]]


def render(sections: Sections) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep the case
    for name, values in sections.items():
        if name == "DEFAULT":
            parser["DEFAULT"] = values
        else:
            parser[name] = values
    buf = io.StringIO()
    parser.write(buf)
    return buf.getvalue()


def urls(spec: BedSpec, ports: dict[str, int]) -> dict[str, str]:
    """Each API's catalog URL."""
    base = {name: f"http://{spec.address}:{port}" for name, port in ports.items()}
    return base | {"keystone": base["keystone"] + "/v3", "nova": base["nova"] + "/v2.1"}


def _auth(auth_url: str, user: str, password: str) -> dict[str, str]:
    """A service user's credentials, as keystoneauth reads them from any section."""
    return {
        "auth_type": "password",
        "auth_url": auth_url,
        "username": user,
        "password": password,
        "user_domain_name": "Default",
        "project_name": "service",
        "project_domain_name": "Default",
        "region_name": REGION,
    }


def _authtoken(auth_url: str, user: str, password: str) -> dict[str, str]:
    # No memcached here: keystonemiddleware caches validated tokens in process.
    return {"www_authenticate_uri": auth_url} | _auth(auth_url, user, password)


def _common(spec: BedSpec, database: str) -> Sections:
    return {
        "DEFAULT": {"transport_url": spec.transport_url, "debug": "false"},
        "database": {"connection": spec.db_url(database), "max_retries": "-1"},
        "oslo_concurrency": {"lock_path": str(spec.directory / "lock")},
    }


def keystone(spec: BedSpec) -> Sections:
    sections = _common(spec, "keystone")
    del sections["DEFAULT"]["transport_url"]  # keystone sends no notifications here
    return sections | {
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": str(spec.directory / "fernet-keys")},
        "credential": {"key_repository": str(spec.directory / "credential-keys")},
        "fernet_receipts": {"key_repository": str(spec.directory / "fernet-keys")},
    }


def placement(spec: BedSpec, url: dict[str, str], secrets: Secrets) -> Sections:
    sections = _common(spec, "placement")
    del sections["DEFAULT"]["transport_url"]
    sections["placement_database"] = sections.pop("database")
    return sections | {
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": _authtoken(
            url["keystone"], "placement", secrets.services["placement"]
        ),
    }


def glance(spec: BedSpec, url: dict[str, str], secrets: Secrets) -> Sections:
    images = spec.directory / "images"
    sections = _common(spec, "glance")
    # Images live in files; nova's fake driver never reads them, but Nova boots only
    # from an image that Glance says is active.
    sections["DEFAULT"] |= {"enabled_backends": "fs:file"}
    return sections | {
        "paste_deploy": {
            "flavor": "keystone",
            "config_file": str(spec.etc / "glance" / "glance-api-paste.ini"),
        },
        "keystone_authtoken": _authtoken(url["keystone"], "glance", secrets.services["glance"]),
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": str(images / "fs")},
        "os_glance_staging_store": {"filesystem_store_datadir": str(images / "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": str(images / "tasks")},
        "oslo_policy": {"enforce_new_defaults": "true"},
    }


def neutron(spec: BedSpec, url: dict[str, str], secrets: Secrets) -> Sections:
    """The API only, with ML2 and no agent: Nova asks it for a server's ports (none,
    since servers boot with `networks: none`) when it moves one; nothing is wired."""
    sections = _common(spec, "neutron")
    sections["DEFAULT"] |= {
        "core_plugin": "ml2",
        # get_ports reads the port-forwarding model, which only this plugin loads.
        "service_plugins": "router,port_forwarding",
        "auth_strategy": "keystone",
        # Port events for Nova need a [nova] section and are of no use without ports.
        "notify_nova_on_port_status_changes": "false",
        "notify_nova_on_port_data_changes": "false",
        "rpc_workers": "0",
        "rpc_state_report_workers": "0",
        "api_paste_config": str(spec.etc / "neutron" / "api-paste.ini"),
    }
    return sections | {
        "keystone_authtoken": _authtoken(url["keystone"], "neutron", secrets.services["neutron"]),
        "ml2": {
            "type_drivers": "flat",
            "tenant_network_types": "",
            "mechanism_drivers": "",
            "extension_drivers": "",
        },
    }


def nova(spec: BedSpec, url: dict[str, str], secrets: Secrets) -> Sections:
    password = secrets.services["nova"]
    service_auth = _auth(url["keystone"], "nova", password)
    sections = _common(spec, "nova")
    sections["DEFAULT"] |= {
        # The fake driver in the variant that keeps its node's identity as a real driver
        # does (`compute_id` in the state path): plain FakeDriver keeps none, and Nova
        # refuses to start a nova-compute again without one (a lab host powered back on).
        "compute_driver": "fake.FakeDriverWithoutFakeNodes",
        "state_path": str(spec.directory / "nova"),
        "my_ip": spec.address,  # each compute host's own in its file (nova_compute)
        # The fake driver has no consoles and there is no metadata service.
        "use_rootwrap_daemon": "false",
        # A compute service is down after 20 s without a report (upstream: 60 s), so
        # that a lab host's power-off shows in Nova soon; it reports every 5 s.
        "service_down_time": "20",
        "report_interval": "5",
    }
    return sections | {
        "api_database": {"connection": spec.db_url("nova_api"), "max_retries": "-1"},
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": _authtoken(url["keystone"], "nova", password),
        "service_user": service_auth | {"send_service_user_token": "true"},
        "placement": service_auth,
        "neutron": service_auth,
        "glance": {"region_name": REGION},
        # One process each: the box has two cores and eight services.
        "conductor": {"workers": "1"},
        "scheduler": {"workers": "1", "discover_hosts_in_cells_interval": "5"},
        # Versioned notifications on the bed's RabbitMQ, as opendoctor's
        # `vim.openstack.notifications_url` reads them (docs/openstack.md).
        # `instance.update` on every change of state, reset-state included.
        "notifications": {
            "notification_format": "versioned",
            "notify_on_state_change": "vm_and_task_state",
        },
        "oslo_messaging_notifications": {"driver": "messagingv2"},
        "vnc": {"enabled": "false"},
        "spice": {"enabled": "false"},
    }


def nova_compute(spec: BedSpec, host: str) -> Sections:
    """What differs per compute host: its name, as the lab's host is named, and its state
    directory, where nova-compute keeps its node's identity (`compute_id`): one shared
    between hosts makes a restarted nova-compute refuse to start."""
    return {
        "DEFAULT": {
            "host": host,
            "state_path": str(spec.directory / "nova" / host),
            "my_ip": spec.host_address(host),
        }
    }


def write_all(spec: BedSpec, ports: dict[str, int], secrets: Secrets, venv_etc: Path) -> None:
    url = urls(spec, ports)
    files: dict[str, Sections] = {
        "keystone/keystone.conf": keystone(spec),
        "placement/placement.conf": placement(spec, url, secrets),
        "glance/glance-api.conf": glance(spec, url, secrets),
        "neutron/neutron.conf": neutron(spec, url, secrets),
        "nova/nova.conf": nova(spec, url, secrets),
    }
    files |= {f"nova/{host}.conf": nova_compute(spec, host) for host in spec.hosts}
    for host in spec.hosts:
        # nova-compute does not make its state directory, and without it fails to keep
        # its identity on its first start and refuses every later one.
        (spec.directory / "nova" / host).mkdir(parents=True, exist_ok=True)
    for name, sections in files.items():
        write_private(spec.etc / name, render(sections))
    # The paste pipelines ship with the packages (in the venv's etc/); the APIs look for
    # them beside their configuration.
    for name in ("nova/api-paste.ini", "glance/glance-api-paste.ini", "neutron/api-paste.ini"):
        shutil.copyfile(venv_etc / name, spec.etc / name)
