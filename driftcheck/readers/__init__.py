"""Readers: where a vLLM comes from (source_tree), the static reader (libcst over
its source, never importing it) and the live reader (inspect over the imported
module, observers on a running engine). Both readers emit
driftcheck.contracts.observation.SurfaceObservation."""
