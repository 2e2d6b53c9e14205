"""The whole parkgate system in one install: the five distributions of this repository, plus the dev tools.

Each top-level folder is a distribution whose files sit at their import path
(``server/parkgate/server/...`` is ``parkgate.server``), all portions of the
PEP 420 namespace ``parkgate``:

==============  ==================  ==========================================================
folder          distribution        import names
==============  ==================  ==========================================================
proto/          parkgate-contract   parkgate.v1 (generated), parkgate.common (Reason, logs, CLI)
native/         parkgate-native     parkgate.native (ticket codes), parkgate.rules (decisions)
clients/        parkgate-clients    parkgate.clients (gate agent, window, admin CLI)
server/         parkgate-server     parkgate.server (rpc, services, domain, store)
ha/             parkgate-ha         parkgate.ha (Patroni + etcd)
==============  ==================  ==========================================================

This file only names them, by their folder (a direct reference), so
``pip install .`` installs the whole system; ``make setup`` installs each
folder editable first, which satisfies the same references. A gate box or a
window PC installs ``proto native clients`` alone (README).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
PARTS = {"parkgate-contract": "proto", "parkgate-native": "native", "parkgate-clients": "clients",
         "parkgate-server": "server", "parkgate-ha": "ha"}

setup(install_requires=[f"{name} @ {(ROOT / folder).as_uri()}" for name, folder in PARTS.items()])
