"""Each shim family against the real source of a release where its contract occurs.

The releases' wheels come through the scan's `--vllm-version` cache (pip,
once; later runs read the cache). The shim's assumptions are checked on that
source: where the adapter looks for `logits_indices` and the scheduled-token
counts, which entry points the sampler wrapper binds, the layer and request
surfaces it relies on.
"""

from __future__ import annotations

import pytest

from driftcheck.readers.observe_static import observe_tree
from driftcheck.scan import scan_tree
from driftcheck.shims import sampler_post_filter
from driftcheck.shims.plan import select_shims
from driftcheck.readers.source_tree import fetch_release
from driftcheck.readers.static_reader import StaticReader

# one release per prepare-inputs contract (the widest spread of families)
RELEASES = ["0.10.0", "0.10.1", "0.11.0", "0.11.1", "0.12.0", "0.33.0"]


@pytest.fixture(scope="module", params=RELEASES)
def release(request):
    tree = fetch_release(request.param)
    return request.param, tree, scan_tree(tree)


def test_prepare_view_positions_match_the_real_return(release):
    version, tree, scan = release
    plan = select_shims(scan.fingerprint.contracts)
    shim = plan.selected["v1"]["prepare_view"]
    contract = plan.context.contract("runner.prepare_inputs")
    fn = StaticReader(tree).function("vllm.v1.worker.gpu_model_runner", "GPUModelRunner._prepare_inputs")
    real = [r for r in fn.returns if r.arity][-1].elements  # the real return statement's element names
    positions = contract.aspects["return_names"].positions()
    assert real[positions["logits_indices"]] == "logits_indices", version
    assert real[positions["spec_decode_metadata"]] == "spec_decode_metadata", version
    params = [p.name for p in fn.params]
    if shim.__name__.endswith("prepare_logits_first"):
        assert params[:2] == ["scheduler_output", "num_scheduled_tokens"], version  # counts come as arg 2
    else:
        assert params == ["scheduler_output"], version
        assert real[positions["num_scheduled_tokens"]] == "num_scheduled_tokens", version  # counts come back


def test_sampler_entry_points_exist_and_share_one_shape(release):
    version, tree, scan = release
    reader = StaticReader(tree)
    found = []
    for name in sampler_post_filter.ENTRY_POINTS:
        try:
            fn = reader.function("vllm.v1.sample.ops.topk_topp_sampler", f"TopKTopPSampler.{name}")
        except Exception:  # noqa: BLE001 - not every platform entry exists in every release
            continue
        found.append(name)
        assert [p.name for p in fn.params][:4] == ["logits", "generators", "k", "p"], (version, name)
    assert "forward_native" in found, version


def test_request_and_layer_surfaces_bound_by_the_shims(release):
    version, tree, scan = release
    observations = observe_tree(tree)
    assert str(observations["model.qwen2.decoder_layer"].aspects["return_names"]) == "(hidden_states, residual)"
    plan = select_shims(scan.fingerprint.contracts)
    assert plan.bound("v1"), version
    reader = StaticReader(tree)
    update = reader.function("vllm.v1.worker.gpu_model_runner", "GPUModelRunner._update_states")
    assert [p.name for p in update.params][:1] == ["scheduler_output"], version
    assert "scheduled_new_reqs" in update.source and "finished_req_ids" in update.source, version
