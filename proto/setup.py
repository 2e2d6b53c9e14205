"""Build glue for parkgate-contract: generate the protobuf/gRPC code and the Python Reason type.

Both are generated from ``parkgate/v1/*.proto`` at build time (grpcio-tools is
a build requirement) and never committed:

* ``parkgate/v1/*_pb2*.py`` -- messages and stubs (protoc);
* ``parkgate/common/reason.py`` -- ``Reason``, a ``StrEnum`` whose members are
  the contract's reason names with their wire numbers. Every package (native
  included) uses this one type; the protobuf enum is only touched at the wire.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

ROOT = Path(__file__).resolve().parent
V1 = ROOT / "parkgate" / "v1"
REASON_PY = ROOT / "parkgate" / "common" / "reason.py"


def generate_protos() -> None:
    from grpc_tools import protoc  # build requirement, see pyproject.toml

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT)) for p in V1.glob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under proto/parkgate/v1")
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
            f"--grpc_python_out={ROOT}", *protos]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed on proto/parkgate/v1")
    finally:
        os.chdir(cwd)
    (V1 / "__init__.py").write_text('"""Generated from proto/parkgate/v1/*.proto at build time."""\n')


_ENUM = re.compile(r"enum\s+Reason\s*\{(?P<body>.*?)\n\}", re.S)
_VALUE = re.compile(r"^\s*(?P<name>[A-Z][A-Z0-9_]*)\s*=\s*(?P<number>\d+)\s*;\s*(?://\s*(?P<doc>.*))?$", re.M)


def reason_module(proto_text: str) -> str:
    """The source of parkgate/common/reason.py for the Reason enum of reason.proto."""
    match = _ENUM.search(proto_text)
    if match is None:
        raise SystemExit("reason.proto: no `enum Reason { ... }`")
    values = [(m["name"], int(m["number"]), (m["doc"] or "").strip()) for m in _VALUE.finditer(match["body"])]
    lines = [
        '"""The one Reason type: every refusal and error parkgate gives, by its stable contract name.',
        "",
        "GENERATED at build time from proto/parkgate/v1/reason.proto by proto/setup.py: do not edit.",
        "A member is its own name (a ``StrEnum``), so it logs, compares and serialises as the name the",
        "contract, the docs and the ``parkgate-reason`` metadata use; ``.number`` is the wire value.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import enum",
        "",
        "",
        "class Reason(enum.StrEnum):",
    ]
    for name, _number, doc in values:
        lines.append(f'    {name} = "{name}"' + (f"  # {doc}" if doc else ""))
    lines += [
        "",
        "    @property",
        "    def number(self) -> int:",
        '        """The value on the wire (``parkgate.v1.Reason``)."""',
        "        return _NUMBERS[self]",
        "",
        "    @classmethod",
        "    def from_number(cls, number: int) -> Reason:",
        '        """The member for a wire value; ``REASON_UNSPECIFIED`` for a number this build does not know."""',
        "        return _BY_NUMBER.get(number, cls.REASON_UNSPECIFIED)",
        "",
        "",
        "_NUMBERS: dict[Reason, int] = {",
        *(f"    Reason.{name}: {number}," for name, number, _ in values),
        "}",
        "_BY_NUMBER: dict[int, Reason] = {number: reason for reason, number in _NUMBERS.items()}",
        "",
    ]
    return "\n".join(lines)


def generate_reason() -> None:
    source = reason_module((V1 / "reason.proto").read_text())
    if not REASON_PY.exists() or REASON_PY.read_text() != source:
        REASON_PY.write_text(source)


def generate() -> None:
    generate_protos()
    generate_reason()


class BuildPy(build_py):
    def run(self) -> None:
        generate()
        super().run()


class EggInfo(egg_info):
    # egg_info lists the package files; the generated ones must exist by then.
    def run(self) -> None:
        generate()
        super().run()


setup(cmdclass={"build_py": BuildPy, "egg_info": EggInfo})
