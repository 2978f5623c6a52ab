"""Normalized views per contract (installed as driftcheck.adapters): an adapter turns one
contract's raw values (what `_prepare_inputs` returned, the engine's request ids, the
sampler's temperatures, the model's norm and LM head) into what a hook point delivers."""
