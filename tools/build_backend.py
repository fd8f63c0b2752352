"""The build backend of pyproject.toml: setuptools, with torch (and ninja) required only where something is
compiled. A wheel with the extension needs torch at build time; an sdist or a pure-Python install
(SPIKEOPS_NO_EXTENSION=1) does not, so an isolated `python -m build --sdist` or `pip install .` with that
variable does not download torch."""
import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every hook setuptools defines)

COMPILE_REQUIRES = ["torch>=2.11", "ninja"]


def _compile_requires():
    return [] if os.environ.get("SPIKEOPS_NO_EXTENSION") == "1" else list(COMPILE_REQUIRES)


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _compile_requires()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _compile_requires()
