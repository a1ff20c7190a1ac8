"""A hand-fused single-character LSTM step for a batch of replies, for the generation engine.

Calling ``nn.LSTM`` on a one-character sequence spends almost all its time on overhead. Here
the weights are rearranged once and every buffer is allocated once, so a step is a handful
of in-place kernels:

- the input is one character, so layer 0's input projection (embedding, ``W_ih`` and both
  biases) is precomputed as a table with one row per character;
- each higher layer multiplies ``[h_below, h_own]`` by one stacked ``[W_ih; W_hh]`` matrix;
- gates are reordered to (i, f, o, g) so one sigmoid and one tanh cover them;
- the hidden states of all layers live side by side in one buffer, so that layer ``l``'s
  input and its own state are already one contiguous row: no concatenation per step.

Rows ``0..batch-1`` of the buffers are the active replies. The gate matrices are packed
once for oneDNN on CPU (see :class:`_Linear`). ``precision="bf16"`` keeps them in bfloat16
and everything else in float32; it is faster on CPUs with bf16 instructions and shifts each
next-character distribution by a small KL divergence (measured by ``charbot bench``).
``precision="int8"`` (CPU) keeps them as int8 with one scale per output row and feeds them the
hidden states as uint8 (see :class:`_Int8Linear`): half bf16's bytes per step. ``"auto"`` here
is the static rule of :func:`model.device.resolve_precision`; the engine measures instead.
On CUDA the step is captured once per batch size as a CUDA graph and replayed.

``step="fused"`` (CPU, fp32 or bf16) runs the whole step as one call into a compiled kernel
instead (:mod:`model.fused_step`), on the same buffers, so rows are set, moved and read the
same way; where the kernel cannot be built, the step stays eager (:attr:`FastStep.path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from model import fused_step
from model.device import bf16_matmul_supported, resolve_precision
from model.network import CharLSTM

log = logging.getLogger(__name__)

STEPS = ("eager", "fused")  # how a step runs: PyTorch calls, or the compiled kernel (model/fused_step.py)


def _reorder_gates(w: torch.Tensor) -> torch.Tensor:
    """PyTorch stores gates as (i, f, g, o); put the three sigmoid gates first: (i, f, o, g)."""
    i, f, g, o = w.chunk(4, dim=0)
    return torch.cat([i, f, o, g], dim=0)


def _onednn_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


class _Linear:
    """``x @ W.T`` for one layer's stacked gate weights, in float32 or bfloat16.

    On CPU the weights are packed once for oneDNN, for the largest batch: that is several
    times faster than a plain matmul for batches (MKL's sgemm is slow on some CPUs), and with
    one packing every row's result is the same bits whatever the batch size, so a reply's
    text cannot depend on how many others run beside it. Where oneDNN is missing (or fails a
    probe) a plain matmul does the same work.
    """

    def __init__(self, weight: torch.Tensor, max_batch: int, dtype: torch.dtype) -> None:
        self.weight = weight.to(dtype).contiguous()  # (4H, K)
        self.weight_t = self.weight.t().contiguous()  # (K, 4H), for the plain path
        self.packed = None
        usable = _onednn_available() and (dtype == torch.float32 or bf16_matmul_supported())
        if self.weight.device.type == "cpu" and usable:
            try:
                packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, max_batch)
                probe = torch.linspace(-1, 1, self.weight.shape[1], dtype=dtype).view(1, -1)
                got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "").float()
                want = probe.double() @ self.weight.double().t()
                tol = 1e-4 if dtype == torch.float32 else 2e-2
                if torch.allclose(got.double(), want, rtol=tol, atol=tol):
                    self.packed = packed
            except (AttributeError, RuntimeError):
                self.packed = None

    def add_to(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out += x @ W.T``."""
        if self.packed is not None:
            out.add_(torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], ""))
        elif self.weight.dtype == torch.float32:
            out.addmm_(x, self.weight_t)
        else:
            out.add_(torch.mm(x, self.weight_t))

    def write(self, x: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> None:
        """``out = bias + x @ W.T``."""
        if self.packed is not None:
            torch.add(bias, torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], ""), out=out)
        elif self.weight.dtype == torch.float32:
            torch.addmm(bias, x, self.weight_t, out=out)
        else:
            torch.add(bias, torch.mm(x, self.weight_t), out=out)


class _Int8Linear:
    """``x @ W.T`` for one layer's stacked gate weights in int8, through oneDNN's u8 x s8 linear.

    Each output row of ``W`` is stored as int8 with its own scale (the row's largest
    ``|w| / 127``). The input is always hidden states, and ``h = o * tanh(c)`` lies in [-1, 1],
    so it is fed as uint8 at the fixed scale 1/127 around 128 (:data:`X_SCALE`,
    :data:`X_ZERO`): no per-step range to measure, and a row's input never depends on the other
    rows, so every row's result is the same bits whatever the batch size. The sums are exact
    integer arithmetic, scaled to float32 once.
    """

    X_SCALE = fused_step.X_SCALE
    X_ZERO = 128

    def __init__(self, weight: torch.Tensor, max_batch: int) -> None:
        self.qweight, scale = fused_step.int8_weights(weight)
        self.scale = scale.float()
        self.zero = torch.zeros(weight.shape[0], dtype=torch.long)
        self.packed = torch.ops.onednn.qlinear_prepack(self.qweight, [max_batch, weight.shape[1]])
        self._probe()

    def __call__(self, qx: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``bias + x @ W.T`` as a new float32 tensor, ``x`` given as uint8 by :func:`lower_states`."""
        return torch.ops.onednn.qlinear_pointwise(
            qx, self.X_SCALE, self.X_ZERO, self.packed, self.scale, self.zero, bias,
            1.0, 0, torch.float32, "none", [], "",
        )

    def add_to(self, qx: torch.Tensor, out: torch.Tensor) -> None:
        """``out += x @ W.T``."""
        out.add_(self(qx, None))

    def write(self, qx: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> None:
        """``out = bias + x @ W.T``."""
        out.copy_(self(qx, bias))

    def _probe(self) -> None:
        """Refuse a oneDNN build whose int8 linear does not compute what it should."""
        k = self.qweight.shape[1]
        qx = torch.arange(k, dtype=torch.long).remainder(255).to(torch.uint8).view(1, -1)
        want = ((qx.double() - self.X_ZERO) * self.X_SCALE) @ (self.qweight.double() * self.scale.double()[:, None]).t()
        got = self(qx, None).double()
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise ValueError("precision int8: this PyTorch's oneDNN int8 linear failed its check; use fp32 or bf16")


class _Head:
    """The output layer, ``bias + h @ W.T``, always in float32.

    On CPU it is one batched matrix-vector product per row (``baddbmm`` over the weights
    broadcast to every row): each row is computed alone, so its bits never depend on the
    batch, and for the few rows of a lone reply it is much cheaper than oneDNN's packed call,
    whose fixed cost per call dominates at this size. With more rows the packed call would win,
    but there the gate matmuls dominate the step anyway (figures: model/README.md, "Speed").
    Elsewhere it is the plain :class:`_Linear`.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, max_batch: int) -> None:
        self.on_cpu = weight.device.type == "cpu"
        self.bias = bias.contiguous()
        if self.on_cpu:
            self.weight_t = weight.t().contiguous()  # (H, V)
            self._expanded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        else:
            self.linear = _Linear(weight, max_batch, torch.float32)

    def write(self, h: torch.Tensor, out: torch.Tensor) -> None:
        """``out = bias + h @ W.T`` for the rows of ``h``."""
        if not self.on_cpu:
            self.linear.write(h, self.bias, out)
            return
        n = h.shape[0]
        args = self._expanded.get(n)
        if args is None:
            args = self._expanded[n] = (self.bias.expand(n, 1, -1), self.weight_t.expand(n, -1, -1))
        torch.baddbmm(args[0], h.unsqueeze(1), args[1], out=out.unsqueeze(1))


def lower_states(h: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor | None, half: torch.Tensor | None) -> None:
    """Write hidden states ``h`` into ``out``, the matmuls' copy of them: a cast to bf16, or for
    int8 (``scratch`` given) ``round(h / X_SCALE) + X_ZERO`` as uint8, ``h`` being in [-1, 1].

    ``half`` holds ``X_ZERO + 0.5`` and ``scratch`` is float32 like ``h``: one fused add, then
    the cast to uint8 truncates, which rounds because every value is positive.
    """
    if scratch is None:
        out.copy_(h)
        return
    torch.add(half, h, alpha=1 / _Int8Linear.X_SCALE, out=scratch)
    out.copy_(scratch)


@dataclass
class _Views:
    """Slices of the preallocated buffers for one batch size, made once and reused."""

    idx: torch.Tensor
    gates: torch.Tensor
    sig: torch.Tensor
    i: torch.Tensor
    f: torch.Tensor
    o: torch.Tensor
    g: torch.Tensor
    hs: torch.Tensor
    h: list[torch.Tensor]
    xh: list[torch.Tensor]
    c: list[torch.Tensor]
    logits: torch.Tensor
    lo_h: list[torch.Tensor] | None  # each layer's hidden state in the matmuls' input precision
    lo_x: list[torch.Tensor] | None  # each layer's matmul input in that precision
    scratch: torch.Tensor | None
    half: torch.Tensor | None


class FastStep:
    """The LSTM of a :class:`CharLSTM` as a fused, preallocated single-character step.

    Usage: put a reply's primed state in a row with :meth:`set_row`, write the characters
    just drawn into :attr:`codes` (a NumPy view of the input buffer) and call :meth:`step`;
    the next-character logits of each row are then in :attr:`logits` (float32, CPU).
    """

    def __init__(
        self,
        model: CharLSTM,
        max_batch: int,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        cuda_graphs: bool = True,
        step: str = "eager",
    ) -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
        cfg = model.config
        self.n_layers, self.hidden, self.vocab = cfg.n_layers, cfg.hidden_size, cfg.vocab_size
        self.max_batch = max_batch
        self.device = torch.device(device) if device is not None else model.head.weight.device
        if not (step == "fused" and precision == "int8"):  # the kernel's int8 is its own, exact on any CPU
            precision = resolve_precision(precision, self.device)
        L, H, V, dev = self.n_layers, self.hidden, self.vocab, self.device
        sd = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()}

        def b(k: int) -> torch.Tensor:
            return _reorder_gates(sd[f"lstm.bias_ih_l{k}"] + sd[f"lstm.bias_hh_l{k}"])

        table = sd["embed.weight"] @ _reorder_gates(sd["lstm.weight_ih_l0"]).t() + b(0)
        self.table0 = table.to(dev, torch.float32).contiguous()  # (V, 4H)
        mats = [_reorder_gates(sd["lstm.weight_hh_l0"])]  # (4H, H)
        for k in range(1, L):
            mats.append(_reorder_gates(torch.cat([sd[f"lstm.weight_ih_l{k}"], sd[f"lstm.weight_hh_l{k}"]], dim=1)))
        self.bias = [torch.zeros(0, device=dev)] + [b(k).to(dev, torch.float32) for k in range(1, L)]
        self.path = "eager"  # the step path actually taken: "fused" only where the kernel is built and fits
        kernel = None
        if step == "fused":
            why = fused_step.unsupported(L, H, precision, self.device)
            if why is not None:
                raise ValueError(why)
            kernel = fused_step.load_kernel()  # None (said once in the log) where it cannot be built
            if kernel is None:
                precision = resolve_precision(precision, self.device)  # the eager step's int8 may not run here
        self.precision = precision
        self.linears: list[_Linear] | list[_Int8Linear]
        if kernel is not None:
            self.linears = []  # the kernel keeps its own packed copy of the weights
        elif precision == "int8":
            self.linears = [_Int8Linear(m, max_batch) for m in mats]
        else:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            self.linears = [_Linear(m.to(dev, torch.float32), max_batch, dtype) for m in mats]
        self.head = _Head(sd["head.weight"].to(dev, torch.float32), sd["head.bias"].to(dev, torch.float32), max_batch)

        f32 = {"device": dev, "dtype": torch.float32}
        self.hs = torch.zeros(max_batch, L * H, **f32)  # [h_0 | h_1 | ...] per row
        self.cs = torch.zeros(L, max_batch, H, **f32)
        self.gates = torch.empty(max_batch, 4 * H, **f32)
        # The hidden states again in the matmuls' input precision: bf16, or uint8 for int8.
        lo_dtype = None if kernel is not None else {"bf16": torch.bfloat16, "int8": torch.uint8}.get(precision)
        self.hs_lo = torch.zeros(max_batch, L * H, device=dev, dtype=lo_dtype) if lo_dtype else None
        eager_int8 = precision == "int8" and kernel is None  # the kernel rounds its own inputs
        self._scratch = torch.zeros(max_batch, L * H, **f32) if eager_int8 else None
        self._half = torch.full((max_batch, L * H), _Int8Linear.X_ZERO + 0.5, **f32) if eager_int8 else None
        if self.hs_lo is not None:
            self._lower_rows(slice(None))
        self._logits_dev = torch.zeros(max_batch, V, **f32)
        pin = dev.type == "cuda"
        self.idx_host = torch.zeros(max_batch, dtype=torch.long, pin_memory=pin)
        self._idx_dev = self.idx_host if dev.type == "cpu" else torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.codes = self.idx_host.numpy()
        self.logits = torch.zeros(max_batch, V, pin_memory=pin) if dev.type != "cpu" else self._logits_dev
        self._views: dict[int, _Views] = {}
        self.fused: fused_step.FusedKernel | None = None
        if kernel is not None:
            self.fused = fused_step.FusedKernel(
                kernel, self.table0, mats, self.bias, sd["head.weight"], sd["head.bias"], precision, self.hs,
                self.cs, self._logits_dev, self.idx_host)
            self.path = "fused"
        self.use_graphs = cuda_graphs and dev.type == "cuda"
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def close(self) -> None:
        """Stop the fused kernel's helper threads, if it started any (the step still works, on one thread)."""
        if self.fused is not None:
            self.fused.close()

    def weight_bytes(self) -> int:
        """The bytes of weights one step reads: the gate matrices and the output layer (what bounds a
        lone row's step from below, see ``charbot bench``); a row of the input table is left out."""
        if self.fused is not None:
            return self.fused.bytes
        head = self.head.weight_t if self.head.on_cpu else self.head.linear.weight
        mats = [lin.qweight if isinstance(lin, _Int8Linear) else lin.weight for lin in self.linears]
        return sum(t.numel() * t.element_size() for t in [*mats, head])

    # ---- rows -------------------------------------------------------------------------

    def set_row(self, row: int, state: tuple[torch.Tensor, torch.Tensor], logits: torch.Tensor) -> None:
        """Load a primed reply into ``row``: ``state`` as from ``nn.LSTM`` (layers, 1, hidden)."""
        h, c = (t.detach() for t in state)
        logits = logits.detach()
        self.hs[row].copy_(h.reshape(-1))
        self.cs[:, row].copy_(c.reshape(self.n_layers, self.hidden))
        self._lower_rows(slice(row, row + 1))
        self.logits[row].copy_(logits.reshape(-1))
        if self._logits_dev is not self.logits:
            self._logits_dev[row].copy_(logits.reshape(-1))

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` over row ``dst`` (used to keep active rows packed at the top)."""
        self.hs[dst].copy_(self.hs[src])
        self.cs[:, dst].copy_(self.cs[:, src])
        if self.hs_lo is not None:
            self.hs_lo[dst].copy_(self.hs_lo[src])
        self.logits[dst].copy_(self.logits[src])
        self.codes[dst] = self.codes[src]

    def state(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A copy of row ``row``'s state, shaped like ``nn.LSTM``'s (layers, 1, hidden)."""
        h = self.hs[row].reshape(self.n_layers, 1, self.hidden).clone()
        return h, self.cs[:, row : row + 1].clone()

    def _lower_rows(self, rows: slice) -> None:
        """Refresh ``hs_lo[rows]`` (the matmuls' copy of the hidden states) from ``hs[rows]``."""
        if self.hs_lo is not None:
            scratch, half = (None, None) if self._scratch is None else (self._scratch[rows], self._half[rows])
            lower_states(self.hs[rows], self.hs_lo[rows], scratch, half)

    # ---- the step ---------------------------------------------------------------------

    def _view(self, n: int) -> _Views:
        v = self._views.get(n)
        if v is None:
            H, L = self.hidden, self.n_layers
            gates = self.gates[:n]
            hs = self.hs[:n]
            lo = self.hs_lo[:n] if self.hs_lo is not None else None
            v = _Views(
                idx=self._idx_dev[:n], gates=gates, sig=gates[:, : 3 * H],
                i=gates[:, :H], f=gates[:, H : 2 * H], o=gates[:, 2 * H : 3 * H], g=gates[:, 3 * H :],
                hs=hs,
                h=[hs[:, k * H : (k + 1) * H] for k in range(L)],
                xh=[hs[:, max(0, k - 1) * H : (k + 1) * H] for k in range(L)],
                c=[self.cs[k, :n] for k in range(L)],
                logits=self._logits_dev[:n],
                lo_h=None if lo is None else [lo[:, k * H : (k + 1) * H] for k in range(L)],
                lo_x=None if lo is None else [lo[:, max(0, k - 1) * H : (k + 1) * H] for k in range(L)],
                scratch=None if self._scratch is None else self._scratch[:n, :H],
                half=None if self._half is None else self._half[:n, :H],
            )
            self._views[n] = v
        return v

    def _cell(self, v: _Views, layer: int) -> None:
        v.sig.sigmoid_()
        v.g.tanh_()
        c, h = v.c[layer], v.h[layer]
        c.mul_(v.f).addcmul_(v.i, v.g)
        torch.tanh(c, out=h)
        h.mul_(v.o)
        if v.lo_h is not None:
            lower_states(h, v.lo_h[layer], v.scratch, v.half)

    def _compute(self, n: int) -> None:
        v = self._view(n)
        x = v.xh if v.lo_x is None else v.lo_x  # the matmuls' inputs, in their precision
        torch.index_select(self.table0, 0, v.idx, out=v.gates)
        self.linears[0].add_to(x[0], v.gates)
        self._cell(v, 0)
        for layer in range(1, self.n_layers):
            self.linears[layer].write(x[layer], self.bias[layer], v.gates)
            self._cell(v, layer)
        self.head.write(v.h[-1], v.logits)

    def step(self, n: int) -> torch.Tensor:
        """Advance rows ``0..n-1`` by the characters in ``codes[:n]``; return their logits (CPU)."""
        if n < 1:
            raise ValueError("step needs at least one row")
        if self.fused is not None:
            self.fused.step(n)
            return self.logits[:n]
        if self.device.type == "cpu":
            self._compute(n)
            return self.logits[:n]
        self._idx_dev[:n].copy_(self.idx_host[:n], non_blocking=True)
        graph = self._graphs.get(n) if self.use_graphs else None
        if graph is None and self.use_graphs:
            try:
                graph = self._capture(n)
            except RuntimeError:  # capture is an optimisation: run the same step eagerly instead
                log.warning("CUDA graph capture failed; stepping without graphs", exc_info=True)
                self.use_graphs = False
        if graph is not None:
            graph.replay()
        else:
            self._compute(n)
        self.logits[:n].copy_(self._logits_dev[:n], non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self.logits[:n]

    def launch(self, first: int, n: int) -> int | None:
        """Start advancing rows ``first..first+n-1`` as :meth:`step` does; :meth:`wait` for the
        returned job before reading or changing those rows. The fused kernel steps them on its
        helper threads while the caller goes on (``first`` may be any row); every other path
        steps rows ``0..n-1`` at once (``first`` must be 0) and returns None."""
        if self.fused is None:
            if first:
                raise ValueError("only the fused step steps rows that do not start at row 0")
            self.step(n)
            return None
        return self.fused.launch(first, n, chunk=-(-n // 4))  # four chunks: enough to share, few to reuse weights

    def wait(self, job: int | None) -> None:
        """Finish a job from :meth:`launch`; its rows' logits are then in :attr:`logits`."""
        if job is not None and self.fused is not None:
            self.fused.wait(job)

    def _capture(self, n: int) -> torch.cuda.CUDAGraph:
        """Record the step for ``n`` rows once; the recording reads and writes the same buffers.

        Capturing runs the step, which would advance the rows: their state is saved and put
        back so capture has no visible effect.
        """
        saved = (self.hs[:n].clone(), self.cs[:, :n].clone(), None if self.hs_lo is None else self.hs_lo[:n].clone())
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._compute(n)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._compute(n)
        finally:
            self.hs[:n].copy_(saved[0])
            self.cs[:, :n].copy_(saved[1])
            if saved[2] is not None:
                self.hs_lo[:n].copy_(saved[2])
        self._graphs[n] = graph
        return graph
