"""Makes the Triton kernels importable as ``spikeops.kernels`` in a source checkout.

An installed spikeops carries them as the subpackage spikeops/kernels (setup.py maps the top-level
kernels/ folder there). A checkout keeps them in kernels/ beside the package, so this registers that
folder under the same name: one module name for the kernels everywhere, no link in the tree.
"""
import importlib.util
import os
import sys


def attach() -> None:
    package_dir = os.path.dirname(os.path.abspath(__file__))
    if "spikeops.kernels" in sys.modules or os.path.isdir(os.path.join(package_dir, "kernels")):
        return
    source = os.path.join(os.path.dirname(package_dir), "kernels")
    spec = importlib.util.spec_from_file_location(
        "spikeops.kernels", os.path.join(source, "__init__.py"), submodule_search_locations=[source])
    if spec is None:
        return  # no kernels folder: the Triton backend reports itself unavailable when asked
    module = importlib.util.module_from_spec(spec)
    sys.modules["spikeops.kernels"] = module
    spec.loader.exec_module(module)
