"""Build glue for parkgate-native: compile the Cython ticket-code core against libsodium."""

from __future__ import annotations

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
PYX = sorted((ROOT / "parkgate" / "native").glob("*.pyx"))

extensions = [
    Extension(f"parkgate.native.{p.stem}", [str(p.relative_to(ROOT))], libraries=["sodium"],
              extra_compile_args=["-O3"])
    for p in PYX
]

setup(ext_modules=cythonize(extensions, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
