"""The surface catalog: every vLLM internal ESamp depends on, and every shape
(contract) it has had in real releases.

Pure data: nothing here imports anything but the contracts layer. Contracts
were derived by reading each release in driftcheck.contracts.releases with the
static reader (`python scripts/derive_contracts.py` prints the distinct aspect
values per surface with the releases they occur in); `seen_in` records that
range, and a range that reaches the newest release is written open-ended
("0.28.0-"), so adding a release to RELEASES is the only edit a release needs
when nothing moved. Aspect values are written as the strings the reports print
and parsed into their value types (driftcheck.contracts.values) when the
contract is built; the readers produce the same types, so a contract is
matched by equality.

Aspects:
  present       "yes" / "no" (an optional surface may be absent by contract)
  signature     parameters without self/cls: "(logits, temp, all_random)";
                "name=" has a default, "*a"/"**k" are var-args
  descriptor    instance | staticmethod | classmethod | property | function
  return_arity  "value" (one object) or "tuple/N"
  return_names  "(logits_indices, spec_decode_metadata)": the names each
                returned tuple element has in the source
  request_ids   passthrough | reassigned by Class.method | reassigned inline
  child_ids     the f-string that names the n>1 child requests
  fields        the attributes ESamp reads that the class has
  members       which of a set of methods the class has
  ...           per-surface aspects documented on the surface
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from driftcheck.contracts.releases import ReleaseRange
from driftcheck.contracts.values import parse_aspect


@dataclass(frozen=True)
class Contract:
    id: str
    summary: str
    aspects: dict  # aspect -> typed value (parsed from the catalog's text)
    seen_in: ReleaseRange

    def __post_init__(self) -> None:
        object.__setattr__(self, "aspects", {k: parse_aspect(k, v) for k, v in self.aspects.items()})
        if isinstance(self.seen_in, str):
            object.__setattr__(self, "seen_in", ReleaseRange.parse(self.seen_in))


@dataclass(frozen=True)
class Surface:
    id: str
    target: str  # "module:Qualname"
    kind: str  # how it is read: function | members | fields | min_p | request_ids | child_ids | plugins | bases
    aspects: tuple[str, ...]  # aspects contracts are compared on
    why: str  # what ESamp uses it for
    contracts: tuple[Contract, ...]
    required: bool = True  # an unknown contract here is an unhandled drift
    options: dict = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def qualname(self) -> str:
        return self.target.split(":")[1]

    @property
    def baseline(self) -> Contract:
        """The first contract: the shape in 0.10.0, where the reference ESamp runtime was validated."""
        return self.contracts[0]

    def contract(self, contract_id: str) -> Contract | None:
        return next((c for c in self.contracts if c.id == contract_id), None)


def C(id: str, summary: str, seen_in: str, **aspects) -> Contract:  # noqa: N802 - reads as a table row
    return Contract(id=id, summary=summary, aspects=aspects, seen_in=seen_in)


ESAMP_INPUT_BATCH_FIELDS = ("req_ids", "req_id_to_index", "num_reqs", "generators", "temperature", "top_k", "top_p")
RUNNER_STEP_METHODS = ("execute_model", "sample_tokens")
PLUGIN_LOADERS = ("vllm.v1.worker.worker_base", "vllm.worker.worker_base", "vllm.v1.engine.core")

SURFACES: tuple[Surface, ...] = (
    Surface(
        "sampler.forward", "vllm.v1.sample.sampler:Sampler.forward", "function", ("signature",),
        "the sampler entry the fused-logit sampler runs under",
        (
            C("forward/2", "(logits, sampling_metadata)", "0.10.0-0.11.0",
              signature="(logits, sampling_metadata)"),
            C("forward/bonus", "adds predict_bonus_token=, logprobs_mode_override=", "0.11.1-",
              signature="(logits, sampling_metadata, predict_bonus_token=, logprobs_mode_override=)"),
        ),
    ),
    Surface(
        "sampler.sample", "vllm.v1.sample.sampler:Sampler.sample", "function", ("signature", "return_arity"),
        "draws tokens after temperature, min-p and top-k/top-p; ESamp reads its result",
        (
            C("sample/tensor", "returns the sampled token tensor", "0.10.0-0.10.1.1",
              signature="(logits, sampling_metadata)", return_arity="value"),
            C("sample/tuple", "returns (tokens, processed_logprobs)", "0.10.2-0.11.0",
              signature="(logits, sampling_metadata)", return_arity="tuple/2"),
            C("sample/tuple-override", "returns (tokens, processed_logprobs); adds logprobs_mode_override=",
              "0.11.1-",
              signature="(logits, sampling_metadata, logprobs_mode_override=)", return_arity="tuple/2"),
        ),
    ),
    Surface(
        "sampler.apply_temperature", "vllm.v1.sample.sampler:Sampler.apply_temperature", "function",
        ("signature", "descriptor"),
        "temperature handling the fused logits must reproduce",
        (
            C("temperature/instance", "instance method (logits, temp)", "0.10.0-0.10.2",
              signature="(logits, temp)", descriptor="instance"),
            C("temperature/all-random", "instance method, gains all_random", "0.11.0",
              signature="(logits, temp, all_random)", descriptor="instance"),
            C("temperature/static", "staticmethod (logits, temp, all_random)", "0.11.1-",
              signature="(logits, temp, all_random)", descriptor="staticmethod"),
        ),
    ),
    Surface(
        "topk_topp.forward_native", "vllm.v1.sample.ops.topk_topp_sampler:TopKTopPSampler.forward_native",
        "function", ("signature", "return_arity"),
        "top-k/top-p sampler entry (native path); its result is what the sampler draws",
        (
            C("topk_topp/tensor", "returns sampled tokens", "0.10.0-0.10.1.1",
              signature="(logits, generators, k, p)", return_arity="value"),
            C("topk_topp/tuple", "returns (tokens, logits_to_return)", "0.10.2-",
              signature="(logits, generators, k, p)", return_arity="tuple/2"),
        ),
    ),
    Surface(
        "topk_topp.forward_cpu", "vllm.v1.sample.ops.topk_topp_sampler:TopKTopPSampler.forward_cpu",
        "function", ("present", "signature", "return_arity"),
        "top-k/top-p sampler entry on the CPU platform",
        (
            C("topk_topp_cpu/absent", "no CPU-specific path (forward_native is used)", "0.10.0-0.10.2",
              present="no"),
            C("topk_topp_cpu/tuple", "returns (tokens, logits_to_return)", "0.11.0-",
              present="yes", signature="(logits, generators, k, p)", return_arity="tuple/2"),
        ),
    ),
    Surface(
        "topk_topp.apply_top_k_top_p", "vllm.v1.sample.ops.topk_topp_sampler:apply_top_k_top_p", "function",
        ("signature", "return_arity"),
        "the top-k/top-p filter: its output is the post-filter logits ESamp intervenes on",
        (
            C("filter/3", "(logits, k, p) -> logits", "0.10.0-0.32.0",
              signature="(logits, k, p)", return_arity="value"),
            C("filter/topp-only-rows", "adds has_topp_only_rows=", "0.33.0-",
              signature="(logits, k, p, has_topp_only_rows=)", return_arity="value"),
        ),
    ),
    Surface(
        "topk_topp.random_sample", "vllm.v1.sample.ops.topk_topp_sampler:random_sample", "function",
        ("signature",),
        "the draw from filtered probabilities, with per-request generators",
        (
            C("draw/2", "(probs, generators)", "0.10.0-0.22.1", signature="(probs, generators)"),
            C("draw/fp64-gumbel", "adds use_fp64_gumbel=", "0.23.0-",
              signature="(probs, generators, use_fp64_gumbel=)"),
        ),
    ),
    Surface(
        "sampler.min_p", "vllm.v1.sample.logits_processor:MinPLogitsProcessor", "min_p",
        ("module", "before_topk_topp"),
        "where min-p filtering happens, so the post-filter hook sees min-p applied",
        (
            C("min_p/logitsprocs-module", "MinPLogitsProcessor in logits_processor.py, applied as an "
              "argmax-invariant processor before top-k/top-p", "0.10.0",
              module="vllm.v1.sample.logits_processor", before_topk_topp="yes"),
            C("min_p/logitsprocs-builtin", "MinPLogitsProcessor in logits_processor/builtin.py, applied as "
              "an argmax-invariant processor before top-k/top-p", "0.10.1-",
              module="vllm.v1.sample.logits_processor.builtin", before_topk_topp="yes"),
        ),
        options={"sampler": "vllm.v1.sample.sampler:Sampler.sample", "applied_via": "argmax_invariant",
                 "topk_topp_call": "topk_topp_sampler("},
    ),
    Surface(
        "runner.prepare_inputs", "vllm.v1.worker.gpu_model_runner:GPUModelRunner._prepare_inputs", "function",
        ("signature", "return_names"),
        "this step's packed rows: logits indices, spec-decode metadata, scheduled-token counts",
        (
            C("prepare/attn-first-cg", "attn_metadata first, with attention_cuda_graphs", "0.10.0",
              signature="(scheduler_output)",
              return_names="(attn_metadata, attention_cuda_graphs, logits_indices, spec_decode_metadata, "
                           "num_scheduled_tokens, spec_decode_common_attn_metadata)"),
            C("prepare/attn-first-6", "attn_metadata first, max_num_scheduled_tokens last", "0.10.1-0.10.2",
              signature="(scheduler_output)",
              return_names="(attn_metadata, logits_indices, spec_decode_metadata, num_scheduled_tokens, "
                           "spec_decode_common_attn_metadata, max_num_scheduled_tokens)"),
            C("prepare/attn-first-8", "attn_metadata first, adds ubatch_slices, num_tokens_after_padding",
              "0.11.0",
              signature="(scheduler_output)",
              return_names="(attn_metadata, logits_indices, spec_decode_metadata, num_scheduled_tokens, "
                           "spec_decode_common_attn_metadata, max_num_scheduled_tokens, ubatch_slices, "
                           "num_tokens_after_padding)"),
            C("prepare/logits-first-4", "logits_indices first; takes the scheduled-token counts", "0.11.1-0.11.2",
              signature="(scheduler_output, num_scheduled_tokens, max_num_scheduled_tokens)",
              return_names="(logits_indices, spec_decode_metadata, ubatch_slices, num_tokens_across_dp)"),
            C("prepare/logits-first-2", "(logits_indices, spec_decode_metadata)", "0.12.0-0.27.1",
              signature="(scheduler_output, num_scheduled_tokens)",
              return_names="(logits_indices, spec_decode_metadata)"),
            C("prepare/logits-first-3", "(logits_indices, spec_decode_metadata, int)", "0.28.0-",
              signature="(scheduler_output, num_scheduled_tokens)",
              return_names="(logits_indices, spec_decode_metadata, num_sampled_tokens.max())"),
        ),
    ),
    Surface(
        "runner.step_api", "vllm.v1.worker.gpu_model_runner:GPUModelRunner", "members", ("members",),
        "where one engine step runs the forward and where it samples",
        (
            C("step/execute", "execute_model runs forward and sampling", "0.10.0-0.11.0",
              members="execute_model"),
            C("step/execute+sample_tokens", "execute_model runs the forward, sample_tokens samples",
              "0.11.1-", members="execute_model, sample_tokens"),
        ),
        options={"members": RUNNER_STEP_METHODS},
    ),
    Surface(
        "runner.cpu_subclass", "vllm.v1.worker.cpu_model_runner:CPUModelRunner", "bases", ("bases",),
        "the CPU runner inherits the GPU runner's surfaces (what the CPU tests exercise)",
        (C("cpu_runner/gpu-subclass", "CPUModelRunner(GPUModelRunner)", "0.10.0-",
           bases="GPUModelRunner"),),
        required=False,
    ),
    Surface(
        "input_batch.fields", "vllm.v1.worker.gpu_input_batch:InputBatch", "fields", ("fields",),
        "rows -> request ids, per-request generators and sampling parameters",
        (C("input_batch/esamp-fields", "all fields ESamp reads are present", "0.10.0-",
           fields=", ".join(ESAMP_INPUT_BATCH_FIELDS)),),
        options={"fields": ESAMP_INPUT_BATCH_FIELDS},
    ),
    Surface(
        "engine.request_ids", "vllm.v1.engine.llm_engine:LLMEngine.add_request", "request_ids",
        ("request_ids",),
        "maps the id a caller passed to the id the engine core (and the runner) sees",
        (
            C("request_ids/passthrough", "the caller's id reaches the engine unchanged", "0.10.0-0.13.0",
              request_ids="passthrough"),
            C("request_ids/assign_request_id", "InputProcessor.assign_request_id appends a random suffix; "
              "the caller's id is kept as external_req_id", "0.14.0-",
              request_ids="reassigned by InputProcessor.assign_request_id"),
        ),
    ),
    Surface(
        "engine.child_ids", "vllm.v1.engine.parallel_sampling:ParentRequest.get_child_info", "child_ids",
        ("child_ids",),
        "how the n>1 samples of one prompt are named (ESamp's prompt groups)",
        (C("child_ids/index_prefix", "child i of request R is 'i_R'", "0.10.0-",
           child_ids='f"{index}_{self.request_id}"'),),
    ),
    Surface(
        "model.qwen2.decoder_layer", "vllm.model_executor.models.qwen2:Qwen2DecoderLayer.forward", "function",
        ("signature", "return_names"),
        "shallow tap: the residual stream after a decoder layer (Qwen2 family)",
        (C("decoder_layer/residual-pair", "(positions, hidden_states, residual) -> (hidden_states, residual)",
           "0.10.0-", signature="(positions, hidden_states, residual)",
           return_names="(hidden_states, residual)"),),
    ),
    Surface(
        "model.llama.decoder_layer", "vllm.model_executor.models.llama:LlamaDecoderLayer.forward", "function",
        ("signature", "return_names"),
        "shallow tap: the residual stream after a decoder layer (Llama family)",
        (C("decoder_layer/residual-pair", "(positions, hidden_states, residual) -> (hidden_states, residual)",
           "0.10.0-", signature="(positions, hidden_states, residual)",
           return_names="(hidden_states, residual)"),),
    ),
    Surface(
        "model.qwen2.final_norm", "vllm.model_executor.models.qwen2:Qwen2Model.forward", "function",
        ("signature", "final_norm"),
        "deep tap: the hidden state entering the model's final norm (Qwen2 family)",
        (C("model/fused-add-norm", "self.norm(hidden_states, residual) after the layer loop",
           "0.10.0-", signature="(input_ids, positions, intermediate_tensors=, inputs_embeds=)",
           final_norm="self.norm(hidden_states, residual)"),),
    ),
    Surface(
        "model.llama.final_norm", "vllm.model_executor.models.llama:LlamaModel.forward", "function",
        ("final_norm",),
        "deep tap: the hidden state entering the model's final norm (Llama family)",
        (C("model/fused-add-norm", "self.norm(hidden_states, residual) after the layer loop",
           "0.10.0-", final_norm="self.norm(hidden_states, residual)"),),
    ),
    Surface(
        "plugins.general_plugins", "vllm.plugins:load_general_plugins", "plugins", ("group", "loaded_in"),
        "how the shims reach the engine-core/worker process (entry point group)",
        (
            C("plugins/worker-v0-path", "group vllm.general_plugins; loaded by vllm/worker/worker_base.py and "
              "the engine core", "0.10.0-0.11.0",
              group="vllm.general_plugins", loaded_in="vllm.worker.worker_base, vllm.v1.engine.core"),
            C("plugins/worker-v1-path", "group vllm.general_plugins; loaded by vllm/v1/worker/worker_base.py "
              "and the engine core", "0.11.1-",
              group="vllm.general_plugins", loaded_in="vllm.v1.worker.worker_base, vllm.v1.engine.core"),
        ),
        options={"group": "vllm.general_plugins", "loaders": PLUGIN_LOADERS},
    ),
)

SURFACES_BY_ID = {s.id: s for s in SURFACES}


def with_contracts(extra: dict[str, tuple[Contract, ...]], surfaces: tuple[Surface, ...] = SURFACES
                   ) -> tuple[Surface, ...]:
    """The catalog plus more contracts per surface id (those generated shims declare: the
    runtime layer loads them, see driftcheck.shims.plan.catalog). Ids already known are kept."""
    if not extra:
        return surfaces
    return tuple(replace(s, contracts=s.contracts + tuple(c for c in extra.get(s.id, ()) if not s.contract(c.id)))
                 for s in surfaces)
