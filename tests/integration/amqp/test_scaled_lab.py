"""UC1 on the real lab with the scaled-out engines: the service stores on PostgreSQL,
its events travel over RabbitMQ, and the owners subscribed over AMQP (the seeds' first
use case), each through its own consumer process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opendoctor.core.egress import address_of
from opendoctor.lab.spec import LabSpec
from opendoctor.tools.demo import fail_and_recover
from opendoctor.tools.stack import running_stack
from tests import pg
from tests.integration.amqp.conftest import Names

SPEC = LabSpec(hosts=3, vms=6, projects=["project-a", "project-b"], ip_prefix="127.67")


async def test_uc1_on_postgresql_and_rabbitmq_with_owners_on_amqp(
    tmp_path: Path, amqp_url: str, names: Names, pg_databases: pg.Databases
) -> None:
    database = await pg_databases.take()
    exchange = names.exchange("alarms")
    base = amqp_url.rstrip("/")
    env = {
        "OPENDOCTOR_DATABASE_URL": pg.url_for(database),
        "OPENDOCTOR_BUS__KIND": "amqp",
        "OPENDOCTOR_BUS__URL": amqp_url,
        "OPENDOCTOR_BUS__PREFIX": names.bus_prefix(["events"], 4),
        "OPENDOCTOR_BUS__PARTITIONS": "4",
    }

    def topic(project: str) -> str:
        return f"{base}/?exchange={exchange}&routing_key=alarm.{project}"

    def action(server: dict[str, Any]) -> str:
        return topic(server["project_id"])

    try:
        async with running_stack(
            SPEC,
            tmp_path,
            env,
            consumer_args=lambda p: ["--amqp", topic(p)],
            egress_allow=[address_of(amqp_url)],
        ) as s:
            alarms = await s.register_alarms(action)
            assert all(a["alarm_actions"][0].startswith("amqp://") for a in alarms)
            story = await fail_and_recover(s, "compute2")

            assert story["not_notified"] == []
            assert {n["instance_id"] for n in story["notifications"]} == {
                v["id"] for v in story["servers"]
            }
            for notice in story["notifications"]:
                assert notice["path"] == f"amqp:{exchange}/alarm.{notice['project']}"
                assert notice["request_id"].startswith("req-")
                assert notice["root_cause"]["alarm_resource"] == "host:compute2"
            assert {"T01", "T02", "T04", "T09", "T11"} <= set(story["trace"])
            # Stored in PostgreSQL: the fault and its notifications, delivered.
            fault = await s.get(f"/v1/faults/{story['fault_id']}")
            assert {n["status"] for n in fault["notifications"]} == {"delivered"}
    finally:
        await pg_databases.give_back(database)
