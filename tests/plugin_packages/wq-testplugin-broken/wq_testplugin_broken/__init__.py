"""A plugin whose import fails, as one with a missing dependency would."""

from __future__ import annotations

raise ImportError("wq_testplugin_broken needs a module that is not installed")
