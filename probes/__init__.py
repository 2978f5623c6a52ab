"""Live checks that hook points fire and deliver the right rows (installed as driftcheck.probes).

Empty until the probes land.
"""
