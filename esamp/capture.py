"""What every CUDA graph capture of ESamp's runs under (the distiller's step, esamp/distiller.py StepGraphs; the
candidate pass, esamp/kernels.py CandidatePass)."""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def no_collection():
    """Python's cyclic garbage collector paused for the capture. A collection inside a capture that frees an
    unreachable object holding a CUDA graph destroys that graph there, an operation a capturing thread may not do,
    and the capture fails (`cudaErrorStreamCaptureInvalidated`); torch.cuda.graph no longer collects before it
    captures (`torch.compiler.config.force_cudagraph_gc`, off by default). Seen on the H100 at 16fe23b: a distiller
    dropped by the kernel check, freed inside the next one's capture."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
