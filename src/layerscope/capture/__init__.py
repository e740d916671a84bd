"""Attaching to a model: choosing layers, flattening outputs, layout views. Keeps no tensor."""

from .layout import Axis, Layout, LayoutView, infer_layout, make_view
from .outputs import iter_float_tensors
from .select import select_modules

__all__ = ["Axis", "Layout", "LayoutView", "infer_layout", "iter_float_tensors", "make_view", "select_modules"]
