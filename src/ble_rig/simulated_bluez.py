"""A simulated BlueZ for Vigil's Bluetooth tests and demo.

Runs bluezoo (a mock of BlueZ's D-Bus API whose adapters see each other) on the bus named by
DBUS_SYSTEM_BUS_ADDRESS, with one adapter per address given on the command line (hci0, hci1, ...
in that order), scanning once a second. Prints "bluez: ready" once org.bluez is served.

bluezoo 1.0.2 cannot reconnect: on disconnect it neither removes the remote GATT objects it
exported nor resets ServicesResolved, and when a peripheral's process dies the devices
connected to it stay connected. Real monitors drop and come back all the time, so this fixes
both before starting:
- on disconnect, the remote GATT objects are un-exported, their notification forwarding is
  dropped, the peripheral is asked to stop notifying, and ServicesResolved goes back to false;
- when a GATT application's owner leaves the bus, every device connected to its adapter is
  disconnected (which is what a central sees when a monitor is switched off).
"""

import asyncio
import logging
import sys

from bluezoo import bluezoo
from bluezoo.device import Device
from bluezoo.gatt.characteristic import GattCharacteristicClientLink
from bluezoo.gatt.manager import GattManager
from bluezoo.utils import BluetoothAddress

# How long to wait for a peripheral to answer StopNotify (it may be gone).
STOP_NOTIFY_TIMEOUT_S = 2.0

_connect = Device.connect
_disconnect = Device.disconnect
_del_gatt_application = getattr(GattManager, "_GattManager__del_gatt_application", None)
if _del_gatt_application is None:
    sys.exit("simulated bluez: this bluezoo version is not the one the fixes were written for "
             "(pip install bluezoo==1.0.2)")


async def unlink(device):
    """Removes what a connection exported for the central, and resets ServicesResolved."""
    links = list(device.services.values())
    device.services.clear()
    for link in links:
        if isinstance(link, GattCharacteristicClientLink):
            link.client_props_changed_subscription.unsubscribe()
            if link.client.Notifying.get(False):
                try:
                    await asyncio.wait_for(link.client.StopNotify(), STOP_NOTIFY_TIMEOUT_S)
                except Exception:  # the peripheral may be gone; nothing to stop then
                    pass
        try:
            device.peer_adapter.mock.remove_object(link)
        except KeyError:
            pass
    if device.services_resolved:
        await device.ServicesResolved.set_async(False)


async def connect(self, uuid=None):
    if self.services:
        # A connect without a disconnect in between: start clean, or the export collides.
        await unlink(self)
    await _connect(self, uuid)


async def disconnect(self, uuid=None):
    await _disconnect(self, uuid)
    await unlink(self)


async def del_gatt_application(self, app):
    await _del_gatt_application(self, app)
    for adapter in list(self.mock.adapters.values()):
        for device in list(adapter.devices.values()):
            if device.peer_adapter is self and device.connected:
                await device.disconnect()


Device.connect = connect
Device.disconnect = disconnect
GattManager._GattManager__del_gatt_application = del_gatt_application


def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    adapters = [BluetoothAddress(a) for a in sys.argv[1:]]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(bluezoo.startup(
        bus="system", adapters=adapters, auto_enable=True, scan_interval=1))
    print("bluez: ready", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
