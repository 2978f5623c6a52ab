"""Binding code per contract family (installed as driftcheck.shims).

Empty until the shims land: a shim binds ESamp's hook points on one contract
of a surface, chosen by the scan's fingerprint.
"""
