"""Build glue that pyproject.toml cannot express.

The repository keeps the shape the team agreed on (``server/ native/ proto/
clients/ ha/`` at the top), while the installed import names form one package,
``parkgate``:

==================  =======================================================
import name         folder
==================  =======================================================
parkgate            server/          (server, domain, store, CLI)
parkgate.native     native/          (ticket codes: Cython + pure Python)
parkgate.v1         proto/parkgate/v1 (generated protobuf + gRPC code)
parkgate.clients    clients/         (gate agent, window client, admin CLI)
parkgate.ha         ha/              (Patroni + etcd cluster)
==================  =======================================================

The protobuf/gRPC modules are generated here, at build time, from the .proto
files: they are never edited by hand and never committed.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = PROTO_ROOT / "parkgate" / "v1"

PACKAGE_DIRS = {
    "parkgate": "server",
    "parkgate.native": "native",
    "parkgate.v1": "proto/parkgate/v1",
    "parkgate.clients": "clients",
    "parkgate.ha": "ha",
}


def generate_protos() -> None:
    """Run protoc (from grpcio-tools) over proto/parkgate/v1/*.proto."""
    from grpc_tools import protoc  # build requirement, see pyproject.toml

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_PACKAGE.glob("*.proto"))
    if not protos:
        raise SystemExit("no .proto files under proto/parkgate/v1")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={PROTO_ROOT}",
        f"--pyi_out={PROTO_ROOT}",
        f"--grpc_python_out={PROTO_ROOT}",
        *protos,
    ]
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed on proto/parkgate/v1")
    finally:
        os.chdir(cwd)
    (PROTO_PACKAGE / "__init__.py").write_text('"""Generated from proto/parkgate/v1/*.proto at build time."""\n')


def find_packages() -> list[str]:
    packages: list[str] = []
    for name, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        packages.append(name)
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            if rel.parts and rel != Path(".") and "__pycache__" not in rel.parts:
                packages.append(".".join([name, *rel.parts]))
    return sorted(set(packages))


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


class EggInfoWithProtos(egg_info):
    # egg_info lists the package files; the generated ones must exist by then.
    def run(self) -> None:
        generate_protos()
        super().run()


def native_extensions() -> list[Extension]:
    from Cython.Build import cythonize

    pyx = sorted(Path("native").glob("*.pyx"))
    extensions = [
        Extension(
            f"parkgate.native.{p.stem}",
            [str(p)],
            libraries=["sodium"],
            extra_compile_args=["-O3"],
        )
        for p in pyx
    ]
    return cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(
    packages=find_packages(),
    package_dir=PACKAGE_DIRS,
    package_data={
        "parkgate.v1": ["*.proto", "*.pyi"],
        "parkgate.native": ["*.pyi"],
        "parkgate.store": ["migrations/*.sql"],
        "parkgate": ["py.typed"],
    },
    ext_modules=native_extensions(),
    cmdclass={"build_py": BuildPyWithProtos, "egg_info": EggInfoWithProtos},
)
