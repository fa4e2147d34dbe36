"""A torch module replayed by onnxruntime, for inference on CPU.

The converted BlazePose networks are chains of small depthwise convolutions, which PyTorch's CPU
kernels run slowly: onnxruntime runs the same graph about twice as fast on one thread
(bench/results/student.json, `persons_per_s_one_core`). The module is exported once, in memory,
with the legacy TorchScript exporter (the dynamo exporter needs onnxscript, which this stack does
not ship), with a dynamic batch axis; outputs come back as torch tensors, so callers do not change.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import noise

#: Crops per onnxruntime call: larger batches run slower per crop on CPU (cache), smaller ones
#: pay the call overhead (measured on blaze37: 8 crops 24 ms each, 24 crops 37 ms each).
CHUNK = 8


def session_options(threads: int | None = None) -> Any:
    """onnxruntime options using as many threads as torch is told to (one core: one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers tell a user nothing
    return options


class OnnxRunner:
    """`module(x)` for a [N, C, H, W] float batch, through onnxruntime; outputs as torch tensors
    (a tuple when the module returns several)."""

    def __init__(self, module: nn.Module, example: Tensor, output_names: Sequence[str]) -> None:
        import onnxruntime as ort

        noise.quiet_warnings("torch.onnx")
        buffer = io.BytesIO()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module, (example,), buffer,  # type: ignore[arg-type]  # a file object works too
                    dynamo=False, opset_version=17, input_names=["input"], output_names=list(output_names),
                    dynamic_axes={"input": {0: "batch"}, **{name: {0: "batch"} for name in output_names}})
        finally:
            module.train(was_training)
        self.session = ort.InferenceSession(buffer.getvalue(), session_options(),
                                            providers=["CPUExecutionProvider"])
        self.several = len(output_names) > 1

    def __call__(self, x: Tensor) -> Any:
        data = np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
        parts = [self.session.run(None, {"input": data[i:i + CHUNK]}) for i in range(0, len(data), CHUNK)]
        tensors = tuple(torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts, strict=True))
        return tensors if self.several else tensors[0]


class _PoseOutputs(nn.Module):
    """Backbone + head of an mmpose top-down model, and the pooled last feature (for selection)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        feats = self.model.extract_feat(x)  # type: ignore[operator]
        out = self.model.head(feats)  # type: ignore[operator]
        pooled = feats[-1].mean(dim=(2, 3))
        return (*out, pooled) if isinstance(out, tuple) else (out, pooled)


def pose_runner(model: nn.Module, input_size: tuple[int, int]) -> OnnxRunner:
    """An mmpose top-down model on its normalised input batch -> (head output..., pooled feature)."""
    w, h = input_size
    device = next(model.parameters()).device
    example = torch.zeros(1, 3, h, w, device=device)
    with torch.no_grad():
        count = len(_PoseOutputs(model).eval()(example))
    names = [f"output{i}" for i in range(count - 1)] + ["pooled"]
    return OnnxRunner(_PoseOutputs(model), example, names)
