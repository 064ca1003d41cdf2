"""Package discovery (the rest of the build configuration is in pyproject.toml).

Every `ultra_solo` subpackage is found, none listed by hand, and the top-level `cfg/` folder (the model YAMLs) ships
inside the package as `ultra_solo.cfg`, with every subfolder it has.
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[
        *find_packages(include=["ultra_solo", "ultra_solo.*"]),
        *(f"ultra_solo.{p}" for p in find_namespace_packages(include=["cfg", "cfg.*"])),
    ],
    package_dir={"ultra_solo.cfg": "cfg"},
)
