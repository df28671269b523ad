"""Fence devices registered through the API (`/v1/fence-devices`), beside those of the
configuration. Passwords are sealed with the key file before they reach the database
and opened only when a device is built to fence (`recovery.fencing`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from pydantic import SecretStr
from sqlalchemy import Table, delete, select
from sqlalchemy.engine import RowMapping

from opendoctor.core.recovery_settings import FenceDeviceSettings
from opendoctor.infra.secretbox import SecretBox
from opendoctor.store.db import Database, dialect_insert
from opendoctor.store.tables import FenceDeviceRow

DEVICES = cast(Table, FenceDeviceRow.__table__)


@dataclass(slots=True)
class StoredDevice:
    """A registered device as the API shows it: everything but the password."""

    host: str
    driver: str
    address: str
    system: str | None
    username: str
    verify_tls: bool
    created_at: float
    updated_at: float


def _shown(row: RowMapping) -> StoredDevice:
    return StoredDevice(
        host=row["host"],
        driver=row["driver"],
        address=row["address"],
        system=row["system"],
        username=row["username"],
        verify_tls=bool(row["verify_tls"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class FenceDeviceStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    async def put(self, host: str, device: FenceDeviceSettings) -> tuple[StoredDevice, bool]:
        """Register or replace `host`'s device; (the record, whether it is new)."""
        now = time.time()
        values = {
            "host": host,
            "driver": device.driver,
            "address": device.address,
            "system": device.system,
            "username": device.username,
            "password_sealed": self.box.seal(device.password.get_secret_value()),
            "verify_tls": device.verify_tls,
            "updated_at": now,
        }
        insert = dialect_insert(self.db, DEVICES)
        upsert = insert.values(created_at=now, **values).on_conflict_do_update(
            index_elements=["host"], set_=values
        )
        async with self.db.engine.begin() as conn:
            before = (
                await conn.execute(select(DEVICES.c.created_at).where(DEVICES.c.host == host))
            ).first()
            await conn.execute(upsert)
            row = (await conn.execute(select(DEVICES).where(DEVICES.c.host == host))).mappings()
            stored = _shown(row.one())
        return stored, before is None

    async def shown(self, host: str) -> StoredDevice | None:
        async with self.db.engine.connect() as conn:
            query = select(DEVICES).where(DEVICES.c.host == host)
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _shown(row)

    async def all_shown(self, limit: int, marker: str | None) -> list[StoredDevice]:
        query = select(DEVICES).order_by(DEVICES.c.host).limit(limit)
        if marker is not None:
            query = query.where(DEVICES.c.host > marker)
        async with self.db.engine.connect() as conn:
            return [_shown(r) for r in (await conn.execute(query)).mappings()]

    async def delete(self, host: str) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(DEVICES).where(DEVICES.c.host == host))
        return bool(result.rowcount)

    async def device(self, host: str) -> FenceDeviceSettings | None:
        """`host`'s device with its password, to fence with; None if none registered."""
        async with self.db.engine.connect() as conn:
            query = select(DEVICES).where(DEVICES.c.host == host)
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return FenceDeviceSettings(
            driver=row["driver"],
            address=row["address"],
            system=row["system"],
            username=row["username"],
            password=SecretStr(self.box.open(row["password_sealed"])),
            verify_tls=bool(row["verify_tls"]),
        )
