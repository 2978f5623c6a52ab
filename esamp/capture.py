"""What every CUDA graph capture of ESamp's runs under (the distiller's step, esamp/distiller.py StepGraphs; the
candidate pass, esamp/kernels.py CandidatePass)."""
from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def no_collection():
    """Python's cyclic garbage collector paused for the capture. A collection inside a capture that frees an
    unreachable object holding a CUDA graph destroys that graph there, an operation a capturing thread may not do,
    and the capture fails (`cudaErrorStreamCaptureInvalidated`). torch.cuda.graph stopped collecting before each
    capture in pytorch/pytorch#158193 (`torch.compiler.config.force_cudagraph_gc`, off by default), which opened this
    (NVIDIA/TransformerEngine#2092 pauses the collector for the same reason). Seen on the H100 at 16fe23b: a
    distiller dropped by the kernel check, freed inside the next one's capture."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def freed_only_by_collector(alive) -> bool:
    """`alive`: a weakref.ref to an object whose last reference was just dropped. True where the object outlived
    that (something still held it) and Python's cyclic collector then freed it: it was held in a reference cycle
    only, and would have been freed at some later collection, wherever that runs. An object something else still
    holds (e.g. the first caller of a lazy import, whose frames an imported module may keep) is not this."""
    if alive() is None:
        return False
    gc.collect()
    return alive() is None
