"""The fused generation step: one compiled call per character for the whole LSTM and its output layer.

:class:`~model.fast_step.FastStep` runs a step as about twenty PyTorch calls, and on a CPU
without native bf16 or int8 matrix instructions its two gate matmuls are oneDNN's float32
path, several times slower than the weights take to read. Here the step is one call into a
small C++ kernel (:mod:`model.fused_source`): for each block of 8 hidden units it streams
the block's gate weights once, keeps the 32 sums of every row in registers, and applies the
sigmoids, the tanh and the cell update before moving on; then the output layer. Three weight
formats: float32; bfloat16 widened to float32 as it is read (half the bytes; the hidden
states and all sums stay float32, so it is closer to fp32 than the oneDNN bf16 path, which
also rounds the hidden states); and int8, by the eager int8 step's rule (:func:`int8_weights`,
the hidden states at the fixed scale 1/127) but summed exactly in integers on any CPU, where
oneDNN's int8 linear saturates without VNNI (:func:`model.device.int8_matmul_supported`). On
an AVX2 CPU its pairwise 16-bit multiply-add does twice the work of a float FMA, so a crowd's
step, bound by arithmetic, takes about 0.6 of bf16's and a lone row's, bound by reading the
weights, half (a quarter of fp32's bytes).

Exactness, as for the eager step: a row's bits do not depend on the batch (every sum has
one fixed order, whatever tile it is computed in) or on the thread count (a step of several
rows may be shared among the kernel's own helper threads, :meth:`FusedKernel.set_threads`,
but each row is stepped whole by one of them). They are not the eager step's bits: the sums
run in another order and the sigmoid and tanh are the kernel's own (within about 1e-7 of the true value),
so the fused step is a path of its own, chosen by measurement (:mod:`model.precision`).

The kernel is compiled at first use with the system's C++ compiler (``$CXX``, else ``c++``,
``g++`` or ``clang++``) into a per-user cache folder (``$CHARBOT_KERNEL_DIR``, else
``$XDG_CACHE_HOME/charbot`` or ``~/.cache/charbot``), keyed by the source, the compiler and
the CPU, and checked against a float64 step before it is used. Where there is no compiler,
the build or the check fails, or ``CHARBOT_FUSED=0`` is set, :func:`load_kernel` logs one
line saying why and returns None, and every step runs eagerly.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from model.cpu import cpu_identity
from model.fused_source import ABI, SOURCE

log = logging.getLogger(__name__)

MAX_LAYERS = 8  # the kernel's table of layers (Args.w)
BLOCK = 8  # hidden units per block of gates; the hidden size must be a multiple
PRECISIONS = ("fp32", "bf16", "int8")  # the weight formats the kernel reads
FORMATS = {"fp32": 0, "bf16": 1, "int8": 2}  # its code for each (Args.format)
X_SCALE = 1 / 127  # int8: the hidden states' scale (they lie in [-1, 1]); the kernel has it built in
MIN_SPLIT_ROWS = 3  # fewest rows a step shares among threads (each share an even number of rows)
COMPILE_TIMEOUT_S = 300
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC", "-pthread", "-std=c++17",
         f"-DCHARBOT_ABI={ABI}"]
NATIVE = ["-march=native"]  # tried first; a compiler that refuses it builds for the generic CPU


def kernel_id() -> str:
    """Which kernel this is (its source and table layout): a measurement of another is not reused."""
    return f"{ABI}-{hashlib.sha256(SOURCE.encode()).hexdigest()[:12]}"


class FusedUnavailable(RuntimeError):
    """Why the fused step cannot run here (said once in the log; the eager step runs instead)."""


class _Args(ctypes.Structure):
    """The kernel's ``Args``: sizes, then the buffers' and weights' addresses (model/fused_source.py)."""

    _fields_ = [(name, ctypes.c_int64) for name in ("layers", "hidden", "vocab", "in_vocab", "max_batch", "format")] + [
        (name, ctypes.c_void_p)
        for name in ("codes", "table", "hs", "cs", "scratch", "head_w", "head_b", "logits")
    ] + [("w", ctypes.c_void_p * MAX_LAYERS), ("bias", ctypes.c_void_p * MAX_LAYERS), ("hq", ctypes.c_void_p),
         ("scale", ctypes.c_void_p * MAX_LAYERS)]


class Kernel:
    """The loaded library: its step and its read-bandwidth probe."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = path
        self.build_seconds = seconds  # 0 when it came from the cache
        lib = ctypes.CDLL(str(path))
        lib.charbot_fused_abi.restype = ctypes.c_int64
        if lib.charbot_fused_abi() != ABI:
            raise FusedUnavailable(f"{path} is for another version of the kernel")
        self.step = lib.charbot_fused_step
        self.step.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64]
        self.step.restype = ctypes.c_int64
        self.pool_new = lib.charbot_pool_new
        self.pool_new.argtypes = [ctypes.c_int64]
        self.pool_new.restype = ctypes.c_void_p
        self.pool_free = lib.charbot_pool_free
        self.pool_free.argtypes = [ctypes.c_void_p]
        self.pool_free.restype = None
        self.launch = lib.charbot_job_launch
        self.launch.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                ctypes.c_int64]
        self.launch.restype = ctypes.c_int64
        self.wait = lib.charbot_job_wait
        self.wait.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        self.wait.restype = None
        self._read = lib.charbot_read_floats
        self._read.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        self._read.restype = ctypes.c_double
        self._lib = lib

    def read(self, floats: torch.Tensor) -> float:
        """Read every float of a contiguous float32 tensor once (the weight-traffic floor's probe)."""
        return self._read(floats.data_ptr(), floats.numel())


# ---- packing ----------------------------------------------------------------------------


def pack_gates(m: torch.Tensor, hidden: int, precision: str) -> torch.Tensor:
    """Gate weights ``(4H, K)`` in (i, f, o, g) order as the kernel reads them: one block of 8
    hidden units after another, each ``(K, 32)``; bf16 interleaves i with f and o with g."""
    k = m.shape[1]
    m = m.to(torch.float32)  # bf16 is rounded from the float32 weights, as the eager bf16 path rounds them
    blocks = m.reshape(4, hidden // BLOCK, BLOCK, k).permute(1, 3, 0, 2)  # (H/8, K, gate, unit)
    if precision == "fp32":
        return blocks.to(torch.float32).contiguous()
    pairs = blocks.reshape(hidden // BLOCK, k, 2, 2, BLOCK).permute(0, 1, 2, 4, 3)  # (.., pair, unit, which)
    return pairs.to(torch.bfloat16).contiguous().view(torch.int16)


def int8_weights(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(N, K)`` as int8 with one scale per output row (its largest ``|w| / 127``): the
    int8 rule of both the eager step (oneDNN's linear) and the kernel, so they round alike."""
    w = m.to(torch.float64)
    scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def pack_gates_int8(m: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate weights ``(4H, K)`` as int8 blocks of 8 hidden units, each ``(K/2, gate, unit, 2)``
    (inputs k and k + 1 side by side, for the kernel's pairwise multiply-add), and the factor
    that turns each gate output's integer sum into its float value, blocked like the biases."""
    q, scale = int8_weights(m)
    k = q.shape[1]
    blocks = q.reshape(4, hidden // BLOCK, BLOCK, k // 2, 2).permute(1, 3, 0, 2, 4).contiguous()
    return blocks, pack_init(scale * X_SCALE, hidden)


def pack_init(v: torch.Tensor, hidden: int) -> torch.Tensor:
    """Gate starting values ``(..., 4H)`` in (i, f, o, g) order, blocked like the weights: ``(..., H/8 * 32)``."""
    lead = v.shape[:-1]
    return v.reshape(*lead, 4, hidden // BLOCK, BLOCK).transpose(-3, -2).reshape(*lead, -1).float().contiguous()


def pack_head(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The output layer ``(V, H)`` as blocks of 8 outputs ``(ceil(V/8), H, 8)``, and its bias padded to match."""
    v, h = weight.shape
    vp = -(-v // BLOCK) * BLOCK
    w = torch.zeros(vp, h, dtype=torch.float64)
    w[:v] = weight
    b = torch.zeros(vp, dtype=torch.float64)
    b[:v] = bias
    return w.reshape(vp // BLOCK, BLOCK, h).transpose(1, 2).float().contiguous(), b.float()


def unsupported(layers: int, hidden: int, precision: str, device: torch.device) -> str | None:
    """Why a model of this shape cannot use the fused step at ``precision`` on ``device``; None if it can."""
    if device.type != "cpu":
        return f"the fused step runs on the CPU, not on {device.type}"
    if precision not in PRECISIONS:
        return f"the fused step has no {precision} path (it has {', '.join(PRECISIONS)})"
    if hidden % BLOCK:
        return f"the fused step needs a hidden size divisible by {BLOCK}, not {hidden}"
    if layers > MAX_LAYERS:
        return f"the fused step takes at most {MAX_LAYERS} layers, not {layers}"
    return None


class FusedKernel:
    """One model's weights packed for the kernel, bound to a :class:`FastStep`'s buffers.

    ``table0`` (codes, 4H), ``mats`` (4H, K) and ``bias`` (4H) are the eager step's, gates in
    (i, f, o, g) order; ``hs``, ``cs``, ``logits`` and ``codes`` are its buffers, which the
    kernel reads and writes in place, so rows are set, moved and read exactly as before.
    """

    def __init__(self, kernel: Kernel, table0: torch.Tensor, mats: list[torch.Tensor], bias: list[torch.Tensor],
                 head_w: torch.Tensor, head_b: torch.Tensor, precision: str, hs: torch.Tensor, cs: torch.Tensor,
                 logits: torch.Tensor, codes: torch.Tensor) -> None:
        layers, max_batch, hidden = cs.shape
        self.kernel = kernel
        self.max_batch = max_batch
        self.table = pack_init(table0, hidden)
        if precision == "int8":
            self.weights, self.scales = (list(t) for t in zip(*(pack_gates_int8(m, hidden) for m in mats), strict=True))
        else:
            self.weights, self.scales = [pack_gates(m, hidden, precision) for m in mats], []
        rounded = max_batch if precision == "int8" else 0  # int8: the layers' inputs, times 127
        self.hq = torch.zeros(rounded, layers * hidden, dtype=torch.int16)
        self.biases = [pack_init(b, hidden) for b in bias[1:]]
        self.head_w, self.head_b = pack_head(head_w, head_b)
        self.scratch = torch.zeros(max_batch, hidden)
        self.bytes = sum(w.numel() * w.element_size() for w in self.weights) + self.head_w.numel() * 4
        for t in (hs, cs, logits, codes):
            if not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError("the fused step needs contiguous CPU buffers")
        self._keep = (hs, cs, logits, codes)
        args = _Args(layers, hidden, logits.shape[1], self.table.shape[0], max_batch, FORMATS[precision],
                     codes.data_ptr(), self.table.data_ptr(), hs.data_ptr(), cs.data_ptr(), self.scratch.data_ptr(),
                     self.head_w.data_ptr(), self.head_b.data_ptr(), logits.data_ptr())
        for i, w in enumerate(self.weights):
            args.w[i] = w.data_ptr()
        for i, b in enumerate(self.biases, start=1):
            args.bias[i] = b.data_ptr()
        args.hq = self.hq.data_ptr()
        for i, sc in enumerate(self.scales):
            args.scale[i] = sc.data_ptr()
        self._args = args
        self._ptr = ctypes.addressof(args)
        self._step = kernel.step
        self.threads = 1  # threads a step of several rows is shared by (set_threads)
        self._pool: int | None = None  # the kernel's helper threads, threads - 1 of them
        self._pool_size = 0
        self._jobs: dict[int, int] = {}  # launched and not yet waited for: our number -> the pool's
        self._launched = 0

    def set_threads(self, threads: int) -> None:
        """Share later steps of several rows by ``threads`` threads: the caller and ``threads - 1``
        helpers, started on the first call that asks for more than there are. A row's bits do
        not change (each row is stepped whole by one thread, in the same order)."""
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if threads - 1 > self._pool_size:
            self.close()
            self._start_pool(threads - 1)
        self.threads = threads

    def _start_pool(self, helpers: int) -> None:
        self._pool = self.kernel.pool_new(helpers)
        self._pool_size = helpers

    def close(self) -> None:
        """Finish the launched steps and stop the helper threads (a later :meth:`set_threads` starts them again)."""
        for job in list(getattr(self, "_jobs", ())):
            self.wait(job)
        if getattr(self, "_pool", None):
            self.kernel.pool_free(self._pool)
        self._pool, self._pool_size, self.threads = None, 0, 1

    def __del__(self) -> None:
        self.close()

    def step(self, n: int) -> None:
        """Advance rows ``0..n-1`` by their codes; their logits are then in the logits buffer."""
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"step needs 1 to {self.max_batch} rows, got {n}")
        self._refuse(self._step(self._ptr, n, self._pool, self.threads))

    def _refuse(self, result: int) -> None:
        """Raise IndexError where a kernel call refused a row's code (it returns ``-(1 + row)`` then)."""
        if result < 0:
            row = -result - 1
            raise IndexError(f"row {row}: code {int(self._keep[3][row])} is outside the vocabulary")

    def launch(self, first: int, n: int, chunk: int = 2) -> int:
        """Start advancing rows ``first..first+n-1`` by their codes and return at once; :meth:`wait`
        for the returned job before reading or changing those rows.

        The rows go in chunks of ``chunk`` rows (the kernel makes it even) to whichever of the kernel's threads is
        free (the step's :meth:`set_threads` helpers), so the caller may do other work meanwhile
        and then step what nobody has taken. The caller must not touch the job's rows until then;
        other rows are its own.
        """
        if n < 1 or first < 0 or first + n > self.max_batch:
            raise ValueError(f"a job needs rows within 0..{self.max_batch - 1}, got {first}..{first + n - 1}")
        if self._pool is None:
            self._start_pool(0)
        seq = self.kernel.launch(self._ptr, first, n, chunk, self._pool, self.threads)
        self._refuse(seq)
        self._launched += 1  # numbered here, not by the pool, which a wider set_threads replaces
        self._jobs[self._launched] = seq
        return self._launched

    def wait(self, job: int) -> None:
        """Finish a launched job (stepping on this thread whatever no helper has taken yet)."""
        seq = self._jobs.pop(job, None)
        if seq is not None:
            self.kernel.wait(self._pool, seq)


# ---- building and loading -----------------------------------------------------------------


def kernel_dir() -> Path:
    """Where compiled kernels are kept: ``$CHARBOT_KERNEL_DIR``, else the user's cache folder."""
    if os.environ.get("CHARBOT_KERNEL_DIR"):
        return Path(os.environ["CHARBOT_KERNEL_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charbot"


def find_compiler() -> str | None:
    """``$CXX`` when set (it must exist), else the first of c++, g++ and clang++ on the PATH."""
    wanted = os.environ.get("CXX")
    if wanted:
        return shutil.which(wanted)
    return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FusedUnavailable(f"the C++ compiler {cxx} does not run ({exc})") from exc
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else cxx


def _compile(cxx: str, source: Path, out: Path) -> None:
    """Compile ``source`` into ``out``: for this CPU (``-march=native``) where the compiler allows it."""
    failure = ""
    for extra in (NATIVE, []):
        try:
            done = subprocess.run([cxx, *FLAGS, *extra, str(source), "-o", str(out)], capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise FusedUnavailable(f"the C++ compiler {cxx} did not run ({exc})") from exc
        if done.returncode == 0:
            return
        failure = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
    raise FusedUnavailable(f"{cxx} could not compile the kernel: {failure[:200]}")


def build(folder: Path | None = None) -> tuple[Path, float]:
    """The compiled kernel's path, compiling it unless the cache has it; and the seconds compiling took."""
    cxx = find_compiler()
    if cxx is None:
        wanted = os.environ.get("CXX")
        where = f"$CXX={wanted} is not on the PATH" if wanted else "no c++, g++ or clang++ on the PATH"
        raise FusedUnavailable(f"no C++ compiler ({where})")
    key = json.dumps({"abi": ABI, "source": hashlib.sha256(SOURCE.encode()).hexdigest(), "flags": FLAGS,
                      "compiler": _compiler_version(cxx), "path": cxx, "machine": platform.machine(),
                      "cpu": cpu_identity()}, sort_keys=True)
    folder = folder if folder is not None else kernel_dir()
    path = folder / f"fused_step_{hashlib.sha256(key.encode()).hexdigest()[:20]}.so"
    if path.is_file():
        return path, 0.0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="charbot-kernel-", dir=folder))
    except OSError:  # an unwritable cache: build in a temporary folder, once per process
        work = Path(tempfile.mkdtemp(prefix="charbot-kernel-"))
        path = work / path.name
    t0 = time.perf_counter()
    try:
        src = work / "fused_step.cpp"
        src.write_text(SOURCE, encoding="utf-8")
        _compile(cxx, src, work / "out.so")
        os.replace(work / "out.so", path)  # atomic: a process compiling beside this one writes its own
    finally:
        for leftover in (work / "fused_step.cpp", work / "out.so"):
            leftover.unlink(missing_ok=True)
        if work != path.parent:
            shutil.rmtree(work, ignore_errors=True)
    return path, time.perf_counter() - t0


_why_not: list[str] = []  # why load_kernel found no kernel, once it has looked
_loading = threading.Lock()  # engines may load side by side: one build, one log line


def load_kernel() -> Kernel | None:
    """The fused step's kernel, built and checked once per process; None (said once, in the log) where it cannot run."""
    with _loading:
        return _load_kernel()


@functools.cache
def _load_kernel() -> Kernel | None:
    try:
        if os.environ.get("CHARBOT_FUSED", "1").strip().lower() in ("0", "off", "no", "false"):
            raise FusedUnavailable("turned off by CHARBOT_FUSED")
        path, seconds = build()
        kernel = Kernel(path, seconds)
        self_check(kernel)
    except Exception as exc:  # whatever went wrong, the eager step serves: the kernel is only faster
        _why_not[:] = [str(exc) if isinstance(exc, FusedUnavailable) else f"{type(exc).__name__}: {exc}"]
        log.warning("fused step: not available here (%s); every step runs eagerly", exc)
        return None
    if seconds:
        log.info("fused step: compiled in %.1f s into %s", seconds, path)
    return kernel


def unavailable_reason() -> str | None:
    """Why there is no fused kernel in this process (building it first if need be); None when there is one."""
    return None if load_kernel() is not None else (_why_not[0] if _why_not else "unknown")


def reset() -> None:
    """Forget the loaded kernel, so the next :func:`load_kernel` looks again (for tests)."""
    with _loading:
        _load_kernel.cache_clear()
        _why_not.clear()


# ---- the check --------------------------------------------------------------------------


@torch.no_grad()
def reference_step(table0: torch.Tensor, mats: list[torch.Tensor], bias: list[torch.Tensor], head_w: torch.Tensor,
                   head_b: torch.Tensor, h: torch.Tensor, c: torch.Tensor, codes: torch.Tensor,
                   inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The step in float64, from the same (i, f, o, g) tensors; ``h`` and ``c`` (layers, rows, H) advance in place.

    ``inputs`` (int8): each layer's input as the kernel rounded it, instead of the exact one.
    """
    hidden = c.shape[2]
    x = None
    for layer, m in enumerate(mats):
        if layer == 0:
            v = h[0].double() if inputs is None else inputs[0]
            gates = table0[codes].double() + v @ m.double().t()
        else:
            v = torch.cat([x, h[layer].double()], 1) if inputs is None else inputs[layer]
            gates = bias[layer].double() + v @ m.double().t()
        i, f, o = (torch.sigmoid(gates[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        g = torch.tanh(gates[:, 3 * hidden :])
        c[layer] = f * c[layer].double() + i * g
        x = o * torch.tanh(c[layer].double())
        h[layer] = x
    return head_b.double() + x @ head_w.double().t()


def _int8_inputs(before: torch.Tensor, after: torch.Tensor, layers: int, hidden: int) -> list[torch.Tensor]:
    """Each layer's rounded input in the int8 step just taken: the layer's own old state and the new
    one of the layer below (as the kernel rounded them: a float64 state could round the other way)."""
    own = [before[:, k * hidden : (k + 1) * hidden] for k in range(layers)]
    new = [after[:, k * hidden : (k + 1) * hidden] for k in range(layers)]
    return [own[0]] + [torch.cat([new[k - 1], own[k]], 1) for k in range(1, layers)]


@torch.no_grad()
def self_check(kernel: Kernel, layers: int = 2, hidden: int = 16, vocab: int = 12, rows: int = 3) -> None:
    """Refuse a kernel that computes the wrong thing (a miscompile, a broken build): a tiny random model
    stepped by the kernel against :func:`reference_step`, in every weight format, alone and in a batch."""
    gen = torch.Generator().manual_seed(7)
    table0 = torch.randn(vocab, 4 * hidden, generator=gen)
    mats = [torch.randn(4 * hidden, hidden if k == 0 else 2 * hidden, generator=gen) / 4 for k in range(layers)]
    bias = [torch.zeros(0)] + [torch.randn(4 * hidden, generator=gen) for _ in range(1, layers)]
    head_w, head_b = torch.randn(vocab - 1, hidden, generator=gen), torch.randn(vocab - 1, generator=gen)
    codes = torch.tensor([3, 0, vocab - 1, 5, 7, 1][:rows])
    for precision in PRECISIONS:
        weights = [m.to(torch.bfloat16).float() for m in mats] if precision == "bf16" else mats
        if precision == "int8":
            weights = [q.double() * scale[:, None] for q, scale in map(int8_weights, mats)]
        hs, cs = torch.zeros(rows, layers * hidden), torch.zeros(layers, rows, hidden)
        logits, idx = torch.zeros(rows, vocab - 1), codes.clone()
        fused = FusedKernel(kernel, table0, mats, bias, head_w, head_b, precision, hs, cs, logits, idx)
        h, c = torch.zeros(layers, rows, hidden, dtype=torch.float64), torch.zeros(layers, rows, hidden,
                                                                                   dtype=torch.float64)
        for _ in range(3):
            before = torch.round(hs * 127).double() / 127  # float32 products, rounded as the kernel rounds them
            fused.step(rows)
            inputs = _int8_inputs(before, fused.hq.double() / 127, layers, hidden) if precision == "int8" else None
            want = reference_step(table0, weights, bias, head_w, head_b, h, c, codes, inputs)
            if not torch.allclose(logits.double(), want, rtol=1e-4, atol=1e-4):
                raise FusedUnavailable(f"the compiled kernel failed its {precision} check")
        first = logits[0].clone()
        hs.zero_(), cs.zero_()
        for _ in range(3):
            fused.step(1)
        if not torch.equal(logits[0], first):
            raise FusedUnavailable(f"the compiled kernel's {precision} row changed with the batch")
