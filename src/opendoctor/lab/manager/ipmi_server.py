"""pyghmi's IPMI BMC server, made into a lab host's BMC (`ipmi.py` runs them).

The one module of the lab that imports pyghmi (the `fencing` extra): without it the lab
runs with its Redfish BMCs only. pyghmi keeps its sockets, sessions and I/O thread in
module state, so `shutdown` undoes that state once every BMC is done.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import constants, serversession
from pyghmi.ipmi.private import session as pyghmi_session

if TYPE_CHECKING:
    from opendoctor.lab.manager.ipmi import IpmiBmcs

# RMCP+ status codes (IPMI 2.0 table 13-15).
NO_CIPHER_SUITE, UNAUTHORIZED_NAME = 0x11, 0x0D
# The one cipher suite pyghmi's server speaks: 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128).
SUITE_3 = (1, 1, 1)


class _Session(serversession.ServerSession):  # type: ignore[misc]
    """A client's RMCP+ session with one BMC: pyghmi's, made to refuse what it cannot do."""

    def create_open_session_response(self, request: bytearray) -> bytearray:
        response: bytearray = super().create_open_session_response(request)
        # pyghmi's server answers every proposal with suite 3, but a client that proposed
        # SHA-256 (suite 17, pyghmi's and ipmitool's first try) then computes the wrong
        # keys. Refusing the proposal makes the client fall back to suite 3.
        if (request[12], request[20], request[28]) != SUITE_3:
            response[1] = NO_CIPHER_SUITE
        return response

    def _got_rakp1(self, data: bytearray) -> None:
        # pyghmi ignores an unknown user (the client times out); a BMC says so at once.
        name = bytes(data[28:]).decode("utf-8", "replace")
        if data[27] == 0 or self.authdata.get(name) is None:
            refused = bytearray([data[0], UNAUTHORIZED_NAME, 0, 0]) + self.clientsessionid
            self.send_payload(refused, constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)

    def close_server_session(self) -> None:
        # Forget the closed session, so that sessions do not pile up over a long lab.
        pyghmi_session.Session.bmc_handlers.get(self.sockaddr, {}).pop(self.bmc.port, None)

    def logout(self, *args: Any) -> None:
        # pyghmi's shutdown calls logout(False) on every handler; its own takes no argument.
        return


class HostBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """The IPMI BMC of one lab host; its power commands run on the manager's loop."""

    def __init__(self, bmcs: IpmiBmcs, host: str, address: str) -> None:
        account = bmcs.account
        bmc_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"opendoctor-lab-bmc:{host}")
        super().__init__({account.username: account.password}, 0, bmc_uuid, address)
        # Port 0 binds a free port; pyghmi routes a session's packets by the BMC's port.
        self.port = int(self.serversocket.getsockname()[1])
        self.host = host
        self.bmcs = bmcs

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        packet = bytearray(data)
        # An RMCP+ open-session request (IPMI 2.0, payload type 0x10) opens one of ours.
        if len(packet) >= 22 and packet[:6] == b"\x06\x00\xff\x07\x06\x10":
            _Session(
                self.authdata, self.kg, sockaddr, self.serversocket, packet[16:], self.uuid, self
            )
            return
        super().sessionless_data(data, sockaddr)

    def get_power_state(self) -> str:
        return self.bmcs.power_state(self.host)

    def power_off(self) -> int:
        return self.bmcs.command(self.host, self.bmcs.off)

    def power_shutdown(self) -> int:
        # The lab's hosts have no OS to ask: a soft off is a hard one (as Redfish's).
        return self.bmcs.command(self.host, self.bmcs.off)

    def power_on(self) -> int:
        return self.bmcs.command(self.host, self.bmcs.on)

    def power_reset(self) -> int:
        return self.bmcs.command(self.host, self.bmcs.reset)

    def power_cycle(self) -> int:
        return self.bmcs.command(self.host, self.bmcs.reset)

    def logout(self, *args: Any) -> None:
        return


def serve_once(timeout: float) -> None:
    """Handle what arrives for any BMC within `timeout` seconds (pyghmi's loop, once)."""
    pyghmi_session.Session.wait_for_rsp(timeout=timeout)


def shutdown(bmcs: list[HostBmc]) -> None:
    """End pyghmi's I/O thread and close the BMCs' sockets; once no BMC thread runs."""
    worker = pyghmi_session.iothread
    if worker is not None and worker.is_alive():
        # pyghmi's own shutdown: it logs every session out and ends its select loop
        # (woken through the first socket, so the sockets are closed only after).
        worker.join()
    for b in bmcs:
        b.serversocket.close()
    # pyghmi's module state as if it had never run, so that nothing points at the closed
    # sockets or the ended thread (and BMCs made later start a thread of their own).
    pyghmi_session.iothread = None
    pyghmi_session.iothreadready = False
    pyghmi_session.iosockets.clear()
    pyghmi_session.Session.bmc_handlers.clear()
