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
  leading       the first options["leading"] parameters of the signature (a wrapper that
                passes the rest through depends on those only)
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
    meaning: dict = field(default_factory=dict)  # what the catalog knows the contract means (not matched)

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
    runner: str | None = None  # the model runner family it belongs to ("v1", "v2"); None: every runner

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


def C(id: str, summary: str, seen_in: str, meaning: dict | None = None, **aspects) -> Contract:  # noqa: N802
    """One contract, written as a table row."""
    return Contract(id=id, summary=summary, aspects=aspects, seen_in=seen_in, meaning=meaning or {})


ESAMP_INPUT_BATCH_FIELDS = ("req_ids", "req_id_to_index", "num_reqs", "generators", "temperature", "top_k", "top_p")
RUNNER_STEP_METHODS = ("execute_model", "sample_tokens")
PLUGIN_LOADERS = ("vllm.v1.worker.worker_base", "vllm.worker.worker_base", "vllm.v1.engine.core")

#: Model Runner V2 contracts no shim binds, and why (the scan then reports V2 unbound when it is chosen).
V2_OPT_IN = {"unhandled": "Model Runner V2 before 0.18 is opt-in only (VLLM_USE_V2_MODEL_RUNNER=1) and its "
                          "sampler takes no InputBatch"}

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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
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
        runner="v1",
    ),
    Surface(
        "runner.cpu_subclass", "vllm.v1.worker.cpu_model_runner:CPUModelRunner", "bases", ("bases",),
        "the CPU runner inherits the GPU runner's surfaces (what the CPU tests exercise)",
        (C("cpu_runner/gpu-subclass", "CPUModelRunner(GPUModelRunner)", "0.10.0-",
           bases="GPUModelRunner"),),
        required=False,
        runner="v1",
    ),
    Surface(
        "input_batch.fields", "vllm.v1.worker.gpu_input_batch:InputBatch", "fields", ("fields",),
        "rows -> request ids, per-request generators and sampling parameters",
        (C("input_batch/esamp-fields", "all fields ESamp reads are present", "0.10.0-",
           fields=", ".join(ESAMP_INPUT_BATCH_FIELDS)),),
        options={"fields": ESAMP_INPUT_BATCH_FIELDS},
        runner="v1",
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
        "runner.update_states", "vllm.v1.worker.gpu_model_runner:GPUModelRunner._update_states", "function",
        ("signature",),
        "where the V1 runner learns of new and finished requests (scheduled_new_reqs, finished_req_ids)",
        (C("update_states/scheduler-output", "(scheduler_output)", "0.10.0-", signature="(scheduler_output)"),),
        runner="v1",
    ),
    Surface(
        "engine.create_config", "vllm.engine.arg_utils:EngineArgs.create_engine_config", "function",
        ("return_arity",),
        "builds the VllmConfig every engine process receives: where ESamp being asked for is first seen",
        (C("create_config/returns-config", "returns the VllmConfig (one value)", "0.10.0-", return_arity="value"),),
    ),
    Surface(
        "engine.request_rejection", "vllm.exceptions:VLLMValidationError", "bases", ("present", "bases"),
        "the error that tells vLLM (and `vllm serve`: HTTP 400) a request is the caller's fault",
        (
            C("rejection/value-error", "no vllm.exceptions: a ValueError from add_request is the caller's fault",
              "0.10.0-0.13.0", present="no"),
            C("rejection/validation-value-error", "VLLMValidationError(ValueError)", "0.14.0-0.26.0",
              present="yes", bases="ValueError"),
            C("rejection/validation-client-error", "VLLMValidationError(VLLMClientError): AsyncLLM.generate passes "
              "only VLLMClientError on as the caller's fault; a ValueError becomes a 500", "0.27.0-",
              present="yes", bases="VLLMClientError"),
        ),
    ),
    Surface(
        "engine.child_info", "vllm.v1.engine.parallel_sampling:ParentRequest.get_child_info", "function",
        ("signature", "return_arity"),
        "where the front-end names child i of an n>1 request and builds its params (the prompt group)",
        (C("child_info/index", "(index) -> (child id, child SamplingParams)", "0.10.0-",
           signature="(index)", return_arity="tuple/2"),),
    ),
    Surface(
        "engine.add_request", "vllm.v1.engine.llm_engine:LLMEngine.add_request", "function", ("leading",),
        "where LLM / LLMEngine admit a request: its caller's id and params, before the engine sees it",
        (C("admission/request-prompt-params", "(request_id, prompt, params, ...)", "0.10.0-",
           leading="(request_id, prompt, params)"),),
        options={"leading": 3},
    ),
    Surface(
        "engine.async_add_request", "vllm.v1.engine.async_llm:AsyncLLM.add_request", "function", ("leading",),
        "where AsyncLLM (`vllm serve`) admits a request: its caller's id and params",
        (C("admission/request-prompt-params", "(request_id, prompt, params, ...)", "0.10.0-",
           leading="(request_id, prompt, params)"),),
        options={"leading": 3},
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
    # ---------------------------------------------------------------- which runner, and Model Runner V2
    Surface(
        "runner.selection", "vllm.v1.worker.gpu_worker:Worker", "runner_selection", ("decided_by", "default_check"),
        "which model runner a GPU worker builds (the V1 GPUModelRunner or Model Runner V2), per architecture",
        (
            C("runner_select/v1-only", "no Model Runner V2 in the release", "0.10.0-0.11.2",
              {"rule": "v1-only"}, decided_by="none", default_check="none"),
            C("runner_select/env-only", "the worker reads VLLM_USE_V2_MODEL_RUNNER (default off)", "0.12.0-0.21.0",
              {"rule": "env-only"}, decided_by="envs.VLLM_USE_V2_MODEL_RUNNER", default_check="none"),
            C("runner_select/allow-list-dense", "VllmConfig.use_v2_model_runner: allow-listed, dense, unquantized",
              "0.22.0-0.23.0", {"rule": "allow-list-dense"}, decided_by="vllm_config.use_v2_model_runner",
              default_check="not model_config.is_moe and (not model_config.is_quantized)"),
            C("runner_select/allow-list", "VllmConfig.use_v2_model_runner: allow-listed architectures", "0.24.0",
              {"rule": "allow-list"}, decided_by="vllm_config.use_v2_model_runner",
              default_check="any((arch in DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES for arch in architectures))"),
            C("runner_select/dense-default", "VllmConfig.use_v2_model_runner: allow-listed or dense", "0.25.0-0.26.0",
              {"rule": "dense-default"}, decided_by="vllm_config.use_v2_model_runner",
              default_check="any((arch in DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES for arch in architectures)) or not "
                            "model_config.is_moe"),
            C("runner_select/dense-default-2", "VllmConfig.use_v2_model_runner: allow-listed or dense (platform list)",
              "0.27.0-0.28.0", {"rule": "dense-default"}, decided_by="vllm_config.use_v2_model_runner",
              default_check="is_default_v2_architecture or not model_config.is_moe"),
            C("runner_select/default-all", "VllmConfig.use_v2_model_runner: V2 unless Triton is missing or a feature "
              "is unsupported (ROCm keeps a V1 list)", "0.29.0-", {"rule": "default-all"},
              decided_by="vllm_config.use_v2_model_runner", default_check="none"),
        ),
        options={"worker": "vllm.v1.worker.gpu_worker:Worker.__init__", "flag": "self.use_v2_model_runner",
                 "config": "vllm.config.vllm:VllmConfig.use_v2_model_runner",
                 "default_check": "_is_default_v2_model_runner_model",
                 "allow_list": "DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES"},
    ),
    Surface(
        "runner_v2.cpu_runner", "vllm.v1.worker.cpu.model_runner:CPUModelRunner", "bases", ("present", "bases"),
        "a CPU Model Runner V2 (built with VLLM_USE_V2_MODEL_RUNNER=1 where Triton has a CPU backend)",
        (
            C("cpu_runner_v2/absent", "the CPU worker builds V1 only", "0.10.0-0.22.1", present="no"),
            C("cpu_runner_v2/gpu-v2-subclass", "CPUModelRunner(GPUModelRunner V2)", "0.23.0-", present="yes",
              bases="GPUModelRunner"),
        ),
        required=False, runner="v2",
    ),
    Surface(
        "runner_v2.prepare_inputs", "vllm.v1.worker.gpu.model_runner:GPUModelRunner.prepare_inputs", "function",
        ("present", "signature", "return_arity"),
        "Model Runner V2: this step's InputBatch (request ids, idx_mapping, logits indices, scheduled counts)",
        (
            C("prepare_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("prepare_v2/padding", "(scheduler_output, num_tokens_after_padding) -> InputBatch", "0.12.0-0.17.1", V2_OPT_IN,
              present="yes", signature="(scheduler_output, num_tokens_after_padding)", return_arity="value"),
            C("prepare_v2/batch-desc", "(scheduler_output, batch_desc) -> InputBatch", "0.18.0-0.27.1",
              present="yes", signature="(scheduler_output, batch_desc)", return_arity="value"),
            C("prepare_v2/batch-req-state", "(scheduler_output, batch_req_state, batch_desc) -> InputBatch",
              "0.28.0-0.30.0", present="yes", signature="(scheduler_output, batch_req_state, batch_desc)",
              return_arity="value"),
            C("prepare_v2/loras", "adds num_active_loras", "0.31.0-", present="yes",
              signature="(scheduler_output, batch_req_state, batch_desc, num_active_loras)", return_arity="value"),
        ), runner="v2",
    ),
    Surface(
        "runner_v2.request_events", "vllm.v1.worker.gpu.model_runner:GPUModelRunner", "members", ("present", "members"),
        "Model Runner V2: where requests are added to and finished in its request states",
        (
            C("requests_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("requests_v2/update_states", "one update_states(scheduler_output)", "0.12.0-0.14.1", V2_OPT_IN,
              present="yes", members="update_states"),
            C("requests_v2/add+finish", "add_requests / finish_requests(scheduler_output)", "0.15.0-",
              present="yes", members="add_requests, finish_requests"),
        ), runner="v2", options={"members": ("add_requests", "finish_requests", "update_states")},
    ),
    Surface(
        "runner_v2.request_state", "vllm.v1.worker.gpu.states:RequestState", "fields", ("present", "fields"),
        "Model Runner V2: per-request prefill progress (which rows sample, which decode)",
        (
            C("request_state_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("request_state_v2/prefill", "prefill progress per request", "0.12.0-0.19.1", present="yes",
              fields="req_id_to_index, prefill_len, num_computed_prefill_tokens"),
            C("request_state_v2/prefill+mirror", "prefill progress and a CPU mirror of computed tokens",
              "0.20.0-", present="yes",
              fields="req_id_to_index, prefill_len, num_computed_prefill_tokens, num_computed_tokens_np"),
        ), runner="v2",
        options={"fields": ("req_id_to_index", "prefill_len", "num_computed_prefill_tokens", "num_computed_tokens_np")},
    ),
    Surface(
        "parallel.batch_sharded_sampling", "vllm.config.parallel:ParallelConfig", "fields", ("present", "fields"),
        "Model Runner V2's opt-in batch-sharded sampling under tensor parallelism (each rank samples only its own "
        "rows): ESamp refuses it by name (esamp/config.py), it would fuse other ranks' rows",
        (
            C("sharded_sampling/config-module", "ParallelConfig lives in vllm/config.py (no sharded sampling)",
              "0.10.0", present="no"),
            C("sharded_sampling/absent", "no batch-sharded sampling: every rank samples every row", "0.10.1-0.28.0",
              present="yes", fields=""),
            C("sharded_sampling/opt-in", "ParallelConfig.enable_batch_sharded_sampling (off by default; with TP on "
              "V2 each rank samples its own rows, through the model's compute_logits_local)", "0.29.0-",
              present="yes", fields="enable_batch_sharded_sampling"),
        ),  # every runner: a config field (only V2 acts on it), not a V2 surface whose absence means "no V2"
        options={"fields": ("enable_batch_sharded_sampling",)},
    ),
    Surface(
        "input_batch_v2.fields", "vllm.v1.worker.gpu.input_batch:InputBatch", "fields", ("present", "fields"),
        "Model Runner V2: the InputBatch fields the prepare view reads",
        (
            C("input_batch_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("input_batch_v2/idx", "rows map to request states through idx_mapping", "0.12.0-0.13.0", V2_OPT_IN, present="yes",
              fields="req_ids, num_reqs, idx_mapping_np, num_scheduled_tokens, logits_indices"),
            C("input_batch_v2/expanded", "adds expanded_idx_mapping (one entry per logits row)", "0.14.0-",
              present="yes",
              fields="req_ids, num_reqs, idx_mapping_np, expanded_idx_mapping, num_scheduled_tokens, logits_indices"),
        ), runner="v2",
        options={"fields": ("req_ids", "num_reqs", "idx_mapping_np", "expanded_idx_mapping", "num_scheduled_tokens",
                            "logits_indices")},
    ),
    Surface(
        "sampler_v2.call", "vllm.v1.worker.gpu.sample.sampler:Sampler.__call__", "function", ("present", "signature"),
        "Model Runner V2's sampler entry: the step's logits and its InputBatch",
        (
            C("sampler_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("sampler_v2/metadata", "(logits, sampling_metadata)", "0.12.0-0.14.1", V2_OPT_IN, present="yes",
              signature="(logits, sampling_metadata)"),
            C("sampler_v2/idx", "(logits, idx_mapping, idx_mapping_np, pos)", "0.15.0-0.15.1", V2_OPT_IN, present="yes",
              signature="(logits, idx_mapping, idx_mapping_np, pos)"),
            C("sampler_v2/idx-local", "adds cu_num_logits_np, input_ids, expanded_local_pos", "0.16.0", V2_OPT_IN,
              present="yes",
              signature="(logits, idx_mapping, idx_mapping_np, cu_num_logits_np, pos, input_ids, expanded_local_pos)"),
            C("sampler_v2/expanded", "expanded_idx_mapping first", "0.17.0-0.17.1", V2_OPT_IN, present="yes",
              signature="(logits, expanded_idx_mapping, idx_mapping_np, cu_num_logits_np, pos, input_ids, "
                        "expanded_local_pos)"),
            C("sampler_v2/input-batch", "(logits, input_batch)", "0.18.0-", present="yes",
              signature="(logits, input_batch)"),
        ), runner="v2",
    ),
    Surface(
        "sampler_v2.draw", "vllm.v1.worker.gpu.sample.sampler:Sampler", "call_keyword", ("present", "call"),
        "Model Runner V2's draw: gumbel_sample on logits that already have temperature, min-p and top-k/top-p",
        (
            C("draw_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("draw_v2/gumbel-after-temperature", "gumbel_sample(..., apply_temperature=False): temperature, min-p "
              "and top-k/top-p are applied before the draw", "0.12.0-", present="yes",
              call="gumbel_sample(apply_temperature=False)"),
        ), runner="v2", options={"callee": "gumbel_sample", "keyword": "apply_temperature"},
    ),
    Surface(
        "sampler_v2.fused_switch", "vllm.v1.worker.gpu.sample.sampler:Sampler", "fields", ("present", "fields"),
        "Model Runner V2: the switches to fused samplers (FlashInfer, XPU) that never materialise filtered logits",
        (
            C("fused_v2/absent", "no Model Runner V2", "0.10.0-0.11.2", present="no"),
            C("fused_v2/none", "no fused sampler, no sampling states", "0.12.0-0.14.1", V2_OPT_IN, present="yes", fields=""),
            C("fused_v2/states", "sampling states, no fused sampler", "0.15.0-0.22.1", present="yes",
              fields="sampling_states"),
            C("fused_v2/flashinfer", "FlashInfer fused sampler switch", "0.23.0-0.30.0", present="yes",
              fields="sampling_states, use_flashinfer"),
            C("fused_v2/flashinfer+xpu", "FlashInfer and XPU fused sampler switches", "0.31.0-", present="yes",
              fields="sampling_states, use_flashinfer, use_xpu_sampler"),
        ), runner="v2", options={"fields": ("sampling_states", "use_flashinfer", "use_xpu_sampler")},
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
