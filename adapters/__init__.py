"""Normalized views per contract (installed as driftcheck.adapters).

Empty until the shims land: an adapter turns one contract's raw values
(e.g. what `_prepare_inputs` returned) into the view a hook point delivers.
"""
