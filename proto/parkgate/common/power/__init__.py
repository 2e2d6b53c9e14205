"""Power: what a UPS says, read the same way by every process (server, site edge, gate agent, cluster node).

* :mod:`.reading`  one UPS reading (mains, battery low, forced shutdown, charge, runtime) and the source contract;
* :mod:`.nut`      Network UPS Tools over TCP (upsd), through NUT's own Python client (PyNUTClient);
* :mod:`.q1`       a serial UPS speaking Megatec/Q1, through pyserial;
* :mod:`.machine`  the one state machine (ONLINE, ON_BATTERY, LOW_BATTERY, SHUTTING_DOWN, UNKNOWN) with
  hysteresis against flapping mains, reporting each transition as a sentence to its listeners;
* :mod:`.settings` the ``[power]`` section every process's configuration embeds;
* :mod:`.watcher`  the asyncio loop that polls a source and drives the machine;
* :mod:`.mains`    the exit status of a power stop, and waiting for steady mains before a start (systemd).
"""

from .machine import PowerMachine, PowerState, Transition
from .mains import EXIT_POWER_STOP, power_settings_of, wait_for_mains
from .reading import PowerSource, PowerSourceError, UpsReading
from .settings import PowerSettings, open_source
from .watcher import PowerWatcher

__all__ = ["EXIT_POWER_STOP", "PowerMachine", "PowerSettings", "PowerSource", "PowerSourceError", "PowerState", "PowerWatcher",
           "Transition", "UpsReading", "open_source", "power_settings_of",
           "wait_for_mains"]
