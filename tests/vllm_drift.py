"""Drifted copies of the installed vLLM for tests: a tree of symlinks to the installed
package with only the edited files written out, so a real engine can import it from
PYTHONPATH (compiled extensions included) at the cost of a directory walk."""

from __future__ import annotations

import os
from pathlib import Path

import vllm

INSTALLED = Path(vllm.__file__).parent
RUNNER = "v1/worker/gpu_model_runner.py"


def shadow_vllm(dest: Path, edits: dict) -> Path:
    """dest/vllm mirrors the installed package; edits: relative path -> (old, new) replacements."""
    for root, dirs, files in os.walk(INSTALLED):
        rel = Path(root).relative_to(INSTALLED)
        (dest / "vllm" / rel).mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if (rel / name).as_posix() not in edits:
                os.symlink(Path(root) / name, dest / "vllm" / rel / name)
    for rel, replacements in edits.items():
        text = (INSTALLED / rel).read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"{rel}: edit anchor not found once: {old[:60]!r}"
            text = text.replace(old, new)
        (dest / "vllm" / rel).write_text(text)
    for info in INSTALLED.parent.glob("vllm*.dist-info"):  # version and distribution, as installed
        os.symlink(info, dest / info.name)
    return dest


_RETURN = """        return (
            logits_indices,
            spec_decode_metadata,
            int(num_sampled_tokens.max()),
        )"""
_CALLER = """            logits_indices, spec_decode_metadata, max_num_sampled_tokens = (
                self._prepare_inputs(scheduler_output, num_scheduled_tokens_np)
            )"""
_SIGNATURE = """        num_scheduled_tokens: np.ndarray,
    ) -> tuple["""

#: Drifts of `_prepare_inputs` the engine still runs with (callers edited to match).
PREPARE_DRIFTS = {
    "return-reordered": [
        (_RETURN, _RETURN.replace("            logits_indices,\n            spec_decode_metadata,",
                                  "            spec_decode_metadata,\n            logits_indices,")),
        (_CALLER, _CALLER.replace("logits_indices, spec_decode_metadata,", "spec_decode_metadata, logits_indices,")),
    ],
    "trailing-element": [
        (_RETURN, _RETURN.replace("int(num_sampled_tokens.max()),", "int(num_sampled_tokens.max()),\n"
                                  "            num_scheduled_tokens,")),
        (_CALLER, _CALLER.replace("max_num_sampled_tokens = (", "max_num_sampled_tokens, _ = (")),
    ],
    "param-added-with-default": [
        (_SIGNATURE, _SIGNATURE.replace("np.ndarray,", "np.ndarray,\n        pad_for_graphs: bool = False,")),
    ],
}
