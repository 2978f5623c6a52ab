"""Live checks that hook points fire and deliver the right rows (installed as
driftcheck.probes): the recording probe, the stress checks and zero-hit alarm, the
decode-shrink stress runner, and the fault switches that prove the probes catch bugs."""
