"""Entry script of a spawned parallel worker (run by ``runpy.run_path``; see ``workers``).

A spawned child is a fresh interpreter where the pack's package name (ComfyUI's
``custom_nodes.<folder>``, or ``wan22duo`` in the tests) is not importable. This script
registers the pack folder under the driver's name (and empty parents for a dotted name),
without running the pack's ``__init__`` (which registers ComfyUI nodes), then hands over
to ``workers.boot``. ``BOOT`` (a dict of plain values and queues) is given as a global.
"""
import importlib
import sys
import types


def register(package: str, root: str) -> None:
    parts = package.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            sys.modules[parent] = types.ModuleType(parent)
            sys.modules[parent].__path__ = []
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [root]
        module.__package__ = package
        sys.modules[package] = module


register(BOOT["package"], BOOT["root"])  # noqa: F821 (given by runpy.run_path)
importlib.import_module(BOOT["package"] + ".engine.parallel.workers").boot(BOOT)  # noqa: F821
