"""Drifted copies of the real installed vLLM source are reported as the right
surface and drift class; the unmodified copy reports no unhandled drift."""

from __future__ import annotations

import re

from driftcheck.errors import EXIT_OK, EXIT_UNHANDLED_DRIFT
from driftcheck.contracts.matching import MISSING, UNKNOWN


def _result(scan, surface_id):
    return next(r for r in scan.results if r.surface.id == surface_id)


def _kinds(result):
    return [d.kind for d in result.drifts]


def test_installed_vllm_has_no_unhandled_drift(installed_scan, installed_contracts):
    assert installed_scan.unhandled == []
    assert installed_scan.exit_code == EXIT_OK
    # the contracts the catalog says the installed release has, surface by surface
    contracts = installed_scan.fingerprint.contracts
    assert installed_contracts, "the installed release is in no contract's range"
    for surface, contract in installed_contracts.items():
        assert contracts[surface] == contract.id, surface


def test_unmodified_copy_scans_the_same(drifted, installed_scan):
    scan = drifted.scan()
    assert scan.fingerprint.contracts == installed_scan.fingerprint.contracts
    assert scan.exit_code == EXIT_OK


def test_renamed_parameter(drifted):
    drifted.edit("vllm/v1/sample/sampler.py", "def apply_temperature(\n        logits: torch.Tensor,\n        temp:",
                 "def apply_temperature(\n        logits: torch.Tensor,\n        temperature:")
    scan = drifted.scan()
    r = _result(scan, "sampler.apply_temperature")
    assert r.status == UNKNOWN and r.unhandled
    assert _kinds(r) == ["param-renamed"]
    assert "temp -> temperature" in r.drifts[0].detail
    assert scan.exit_code == EXIT_UNHANDLED_DRIFT


def test_swapped_return_tuple(drifted):
    drifted.edit("vllm/v1/worker/gpu_model_runner.py",
                 "        return (\n            logits_indices,\n            spec_decode_metadata,",
                 "        return (\n            spec_decode_metadata,\n            logits_indices,")
    r = _result(drifted.scan(), "runner.prepare_inputs")
    assert r.status == UNKNOWN
    assert _kinds(r) == ["return-reordered"]
    assert r.nearest.id == "prepare/logits-first-3"


def test_trailing_return_element_added(drifted):
    drifted.edit("vllm/v1/worker/gpu_model_runner.py",
                 "            int(num_sampled_tokens.max()),\n        )",
                 "            int(num_sampled_tokens.max()),\n            num_scheduled_tokens,\n        )")
    r = _result(drifted.scan(), "runner.prepare_inputs")
    assert _kinds(r) == ["return-arity-changed"]
    assert "trailing element added: num_scheduled_tokens" in r.drifts[0].detail


def test_method_made_static(drifted):
    drifted.edit("vllm/v1/sample/sampler.py", "    def sample(\n        self,\n", "    @staticmethod\n    def sample(\n")
    r = _result(drifted.scan(), "sampler.sample")
    assert r.status == UNKNOWN
    assert _kinds(r) == ["descriptor-changed"]
    assert r.drifts[0].detail == "instance -> staticmethod"


def test_parameter_added_with_default(drifted):
    drifted.edit("vllm/v1/sample/ops/topk_topp_sampler.py",
                 "    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None\n) -> torch.Tensor:",
                 "    logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None, mask=None\n) -> torch.Tensor:")
    r = _result(drifted.scan(), "topk_topp.apply_top_k_top_p")
    assert r.status == UNKNOWN
    assert [d.render() for d in r.drifts][0] == "param-added: mask (with default)"
    assert "param-reordered" not in _kinds(r)


def test_request_ids_reassigned_inline(drifted):
    """0.32.0 reassigns ids in InputProcessor.assign_request_id; move the rewrite inline."""
    path = "vllm/v1/engine/llm_engine.py"
    text = (drifted.root / path).read_text()
    call = re.search(r"\n(\s*)self\.input_processor\.assign_request_id\(request\)\n", text)
    assert call, "real source moved: update the test"
    indent = call.group(1)
    drifted.edit(path, call.group(0), f"\n{indent}request.request_id = f\"{{request.request_id}}-{{id(request)}}\"\n")
    r = _result(drifted.scan(), "engine.request_ids")
    assert r.status == UNKNOWN
    assert _kinds(r) == ["request-id-behaviour-changed"]
    assert "reassigned inline" in r.drifts[0].detail


def test_request_ids_made_passthrough(drifted):
    drifted.edit("vllm/v1/engine/llm_engine.py", "self.input_processor.assign_request_id(request)", "pass")
    r = _result(drifted.scan(), "engine.request_ids")
    assert str(r.observation.aspects["request_ids"]) == "passthrough"
    # passthrough is a known (older) contract: handled, not a drift
    assert r.contract.id == "request_ids/passthrough" and not r.unhandled


def test_removed_surface(drifted):
    drifted.edit("vllm/v1/sample/ops/topk_topp_sampler.py", "def forward_native(", "def forward_native_renamed(")
    r = _result(drifted.scan(), "topk_topp.forward_native")
    assert r.status == MISSING and r.unhandled
    assert _kinds(r) == ["surface-missing"]


def test_removed_input_batch_field(drifted):
    drifted.edit("vllm/v1/worker/gpu_input_batch.py", "self.generators", "self.rngs", count=-1)
    r = _result(drifted.scan(), "input_batch.fields")
    assert r.status == UNKNOWN
    assert [d.render() for d in r.drifts] == ["field-missing: generators"]


def test_inherited_method_is_followed(drifted):
    """A surface moved to a base class is still found (and reported where it now lives)."""
    path = "vllm/v1/sample/sampler.py"
    text = (drifted.root / path).read_text()
    start = text.index("    @staticmethod\n    def apply_temperature(")
    end = text.index("\n    @staticmethod", start + 10)
    method = text[start:end]
    text = text[:start] + text[end:]
    text = text.replace("class Sampler(nn.Module):", "class _SamplerBase:\n" + method + "\n\n\nclass Sampler(_SamplerBase, nn.Module):")
    (drifted.root / path).write_text(text)
    r = _result(drifted.scan(), "sampler.apply_temperature")
    assert r.contract is not None and r.contract.id == "temperature/static"


def test_scan_names_the_shim_or_that_none_fits(drifted, installed_scan):
    assert installed_scan.shim("runner.prepare_inputs") == "prepare_logits_first"
    assert installed_scan.shim("model.qwen2.decoder_layer") == "layer_taps"
    assert installed_scan.shim("runner.step_api") == "-"  # informational, no shim reads it
    drifted.edit("vllm/v1/sample/sampler.py", "    def sample(\n        self,\n", "    @staticmethod\n    def sample(\n")
    scan = drifted.scan()
    assert scan.shim("sampler.sample") == "none fits"
    assert [r.surface.id for r in scan.unhandled] == ["sampler.sample"]


def test_a_surface_drifting_back_to_an_old_contract_is_out_of_range(drifted, installed_tree):
    """apply_temperature turns back into the two-argument instance method of 0.10.x while every
    other surface stays as installed: each surface matches a known contract, but no release ever
    had this fingerprint, so the scan names the surface, both ranges, and exits 1."""
    drifted.edit("vllm/v1/sample/sampler.py",
                 "    @staticmethod\n    def apply_temperature(\n        logits: torch.Tensor,\n"
                 "        temp: torch.Tensor,\n        all_random: bool,\n    )",
                 "    def apply_temperature(\n        self,\n        logits: torch.Tensor,\n"
                 "        temp: torch.Tensor,\n    )")
    scan = drifted.scan()
    assert _result(scan, "sampler.apply_temperature").contract.id == "temperature/instance"  # a known shape
    assert scan.unhandled == []  # every surface on its own is fine ...
    [out] = scan.out_of_range  # ... the combination is not
    assert (out.surface, out.contract, out.contract_releases) == ("sampler.apply_temperature", "temperature/instance",
                                                                 "0.10.0-0.10.2")
    from driftcheck.contracts.releases import ReleaseRange

    assert ReleaseRange.parse(out.tree_releases).contains(installed_tree.version)
    assert "no release had this combination" in out.drift().render()
    assert scan.exit_code == EXIT_UNHANDLED_DRIFT


def test_consistency_takes_the_releases_most_contracts_agree_on():
    from types import SimpleNamespace

    from driftcheck.contracts.catalog import Contract
    from driftcheck.contracts.matching import consistency

    def result(sid, seen_in):
        return SimpleNamespace(surface=SimpleNamespace(id=sid), contract=Contract(sid, "", {}, seen_in))

    same = [result("a", "0.20.0-"), result("b", "0.25.0-0.27.1"), result("c", "0.10.0-")]
    assert consistency(same) == []  # 0.25.0-0.27.1 had all three
    mixed = same + [result("d", "0.10.0-0.10.2"), result("e", "0.99.0")]  # e: no catalogued release (generated)
    [out] = consistency(mixed)
    assert (out.surface, out.tree_releases) == ("d", "0.25.0-0.27.1")
