"""The access rule of every RPC, read from the contract's method options."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache

from google.protobuf.descriptor import FileDescriptor

import parkgate.v1
from parkgate.v1 import options_pb2


@dataclass(frozen=True, slots=True)
class AccessRule:
    permission: str
    public: bool
    device: bool
    mutating: bool
    on_battery: int = 0  # options_pb2.OnBattery: served, queued, slowed or refused on battery (S30)


def _contract_files() -> list[FileDescriptor]:
    files = []
    for info in pkgutil.iter_modules(parkgate.v1.__path__):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(f"parkgate.v1.{info.name}").DESCRIPTOR)
    return files


@cache
def access_rules() -> dict[str, AccessRule]:
    """``{"/parkgate.v1.Sales/CreateOrder": AccessRule(...)}`` for every RPC in the contract.

    An RPC without an access option is a contract bug: it raises here, at
    server start, rather than being reachable by anybody.
    """
    rules: dict[str, AccessRule] = {}
    for file in _contract_files():
        for service in file.services_by_name.values():
            for method in service.methods:
                opts = method.GetOptions()
                if not opts.HasExtension(options_pb2.access):
                    raise RuntimeError(f"{service.full_name}.{method.name} declares no (access) option")
                rule = opts.Extensions[options_pb2.access]
                rules[f"/{service.full_name}/{method.name}"] = AccessRule(
                    rule.permission, rule.public, rule.device, rule.mutating, rule.on_battery
                )
    return rules


def contract_service_names() -> list[str]:
    return sorted({name.split("/")[1] for name in access_rules()})
