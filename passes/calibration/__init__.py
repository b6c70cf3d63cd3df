"""Observers: small stateful objects that watch a tensor's values during calibration and
turn what they saw into a range (STYLE.md §7).  Made by name through :data:`OBSERVERS`."""
from ptqc.passes.calibration.observers import OBSERVERS, MinMaxObserver, Observer, make_observer

__all__ = ["OBSERVERS", "MinMaxObserver", "Observer", "make_observer"]
