"""BlazePose's landmark network (`pose_landmark_full.tflite`) as a trainable, readable PyTorch module.

The weights come from the TFLite file inside the pinned `mediapipe==0.10.14` wheel, read with the
`tflite` flatbuffer package (mediapipe itself is never imported). The file is an op list (PAD,
CONV_2D, DEPTHWISE_CONV_2D, ADD, RESIZE_BILINEAR, MAX_POOL_2D, RESHAPE, LOGISTIC, with fp16
constants expanded by DEQUANTIZE). The architecture is written out here by role, a MobileNetV2-like
encoder, an FPN-like decoder, the heatmap head, the regression branch with its three 2x2 heads and
the segmentation branch, and each named layer takes its weights from the op it corresponds to, found
by walking the graph from the input (`GraphBinder`): a layer that finds no op, an op claimed twice or
an op no layer claimed is an error, so the module is the file's graph and nothing else.

TFLite semantics reproduced exactly (the pitfalls measured in STACK.md):
- NHWC -> NCHW: conv kernels OHWI -> OIHW, depthwise kernels 1HWC -> C1HW (groups = channels).
- TF "SAME" padding of a stride-2 conv on an even input is uneven (the extra pixel goes bottom/right):
  `TFConv2d` pads explicitly; explicit PAD ops are folded into the conv that follows them.
- fp16 weights are expanded to fp32; activations are the fused RELU6 of the ops (batch norm is
  already folded into the convs: there is no BN layer to fine-tune).
- RESIZE_BILINEAR with half-pixel centres is `F.interpolate(..., align_corners=False)`.
The resize sizes and the final 2x2 convs fix the input at 256x256.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Inside the mediapipe wheel.
LANDMARK_MODEL_RELPATH = "modules/pose_landmark/pose_landmark_full.tflite"
INPUT_SIZE = 256
NUM_LANDMARKS = 39  # the first 33 are BlazePose's named points, then 6 auxiliary (ROI) points
HEATMAP_SIZE = 64


# --------------------------------------------------------------------------------------------------
# Files and hashes
# --------------------------------------------------------------------------------------------------


def mediapipe_file(relpath: str) -> Path:
    """A file inside the installed mediapipe package, found without importing mediapipe."""
    spec = importlib.util.find_spec("mediapipe")
    name = Path(relpath).name
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name} not found: the mediapipe package is not installed (pip install --no-deps "
            f"mediapipe==0.10.14, requirements/nodeps.txt); it ships mediapipe/{relpath}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found at {path} (mediapipe==0.10.14 ships mediapipe/{relpath})")
    return path


def landmark_model_path() -> Path:
    """`pose_landmark_full.tflite` inside the installed mediapipe wheel."""
    return mediapipe_file(LANDMARK_MODEL_RELPATH)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the converted model's provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Hex sha256 of a module's state dict: keys sorted, each key, dtype, shape and tensor bytes."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# The TFLite graph
# --------------------------------------------------------------------------------------------------


class GraphMismatch(RuntimeError):
    """The TFLite graph is not the one the PyTorch architecture describes."""


@dataclass(frozen=True)
class Op:
    """One compute op of the flatbuffer: kind (BuiltinOperator name), tensor ids, decoded options."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict, compare=False)


_ACTIVATIONS = {0: "none", 1: "relu", 3: "relu6"}


def _activation(code: int, op_index: int) -> str:
    if code not in _ACTIVATIONS:
        raise GraphMismatch(f"op {op_index}: fused activation {code} is not supported")
    return _ACTIVATIONS[code]


def _decode_options(tfl: Any, kind: str, op: Any, index: int) -> dict[str, Any]:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    padding = {0: "SAME", 1: "VALID"}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = tfl.Conv2DOptions() if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions()
        o.Init(table.Bytes, table.Pos)
        out = {
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "padding": padding[o.Padding()],
            "activation": _activation(o.FusedActivationFunction(), index),
        }
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("ADD", "CONCATENATION"):
        o = tfl.AddOptions() if kind == "ADD" else tfl.ConcatenationOptions()
        o.Init(table.Bytes, table.Pos)
        out = {"activation": _activation(o.FusedActivationFunction(), index)}
        if kind == "CONCATENATION":
            out["axis"] = o.Axis()
        return out
    if kind == "MAX_POOL_2D":
        o = tfl.Pool2DOptions()
        o.Init(table.Bytes, table.Pos)
        return {
            "stride": (o.StrideH(), o.StrideW()),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "padding": padding[o.Padding()],
            "activation": _activation(o.FusedActivationFunction(), index),
        }
    if kind == "RESIZE_BILINEAR":
        o = tfl.ResizeBilinearOptions()
        o.Init(table.Bytes, table.Pos)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if kind == "DEPTH_TO_SPACE":
        o = tfl.DepthToSpaceOptions()
        o.Init(table.Bytes, table.Pos)
        return {"block_size": o.BlockSize()}
    return {}


def _densify(tfl: Any, tensor: Any, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Expand a sparse TFLite constant to dense: dense leading dims then one SPARSE_CSR last dim, in
    the tensor's own order (how the converter stores pruned conv kernels); other layouts are refused.
    """
    sparsity = tensor.Sparsity()
    order = [int(v) for v in sparsity.TraversalOrderAsNumpy()]
    formats = [sparsity.DimMetadata(i).Format() for i in range(sparsity.DimMetadataLength())]
    csr_last = [0] * (len(shape) - 1) + [1]
    if order != list(range(len(shape))) or sparsity.BlockMapLength() or formats != csr_last:
        raise GraphMismatch(f"sparse tensor {tensor.Name().decode()}: layout (order {order}, formats "
                            f"{formats}, block map {sparsity.BlockMapLength()}) is not supported")
    last = sparsity.DimMetadata(len(shape) - 1)

    def vector(table: Any, kind: int) -> np.ndarray:
        cls = {1: tfl.Int32Vector, 2: tfl.Uint16Vector, 3: tfl.Uint8Vector}[kind]
        vec = cls()
        vec.Init(table.Bytes, table.Pos)
        return np.asarray(vec.ValuesAsNumpy(), dtype=np.int64)

    segments = vector(last.ArraySegments(), last.ArraySegmentsType())
    indices = vector(last.ArrayIndices(), last.ArrayIndicesType())
    rows = int(np.prod(shape[:-1]))
    if len(segments) != rows + 1 or len(indices) != len(values):
        raise GraphMismatch(f"sparse tensor {tensor.Name().decode()}: inconsistent CSR arrays")
    dense = np.zeros((rows, shape[-1]), dtype=values.dtype)
    dense[np.repeat(np.arange(rows), np.diff(segments)), indices] = values
    return dense.reshape(shape)


class TFLiteGraph:
    """The first subgraph of a .tflite file: compute ops in file order and float32 constants.

    DEQUANTIZE (fp16 -> fp32) and DENSIFY (sparse -> dense) ops only prepare constants: they are
    evaluated here, and their outputs are constants like any other.
    """

    def __init__(self, path: str | Path) -> None:
        import tflite

        self.path = Path(path)
        data = self.path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        model = tflite.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)
        op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.names: dict[int, str] = {}
        self.constants: dict[int, np.ndarray] = {}
        raw_tensors = {}
        np_types = {0: np.float32, 1: np.float16, 2: np.int32, 9: np.int8, 3: np.uint8, 4: np.int64}
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            raw_tensors[t] = tensor
            self.shapes[t] = tuple(int(v) for v in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            self.names[t] = tensor.Name().decode()
            buffer = model.Buffers(tensor.Buffer())
            if buffer is None:
                continue
            if buffer.Offset() > 1:
                blob = data[buffer.Offset(): buffer.Offset() + buffer.Size()]
            elif buffer.DataLength():
                blob = buffer.DataAsNumpy().tobytes()
            else:
                continue
            values = np.frombuffer(blob, dtype=np_types[tensor.Type()])
            if tensor.Sparsity() is None:
                values = values.reshape(self.shapes[t])
            self.constants[t] = values
        self.inputs = tuple(int(v) for v in graph.InputsAsNumpy())
        self.outputs = tuple(int(v) for v in graph.OutputsAsNumpy())
        self.ops: list[Op] = []
        self.op_counts: Counter[str] = Counter()
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            self.op_counts[kind] += 1
            inputs = tuple(int(v) for v in op.InputsAsNumpy())
            outputs = tuple(int(v) for v in op.OutputsAsNumpy())
            if kind == "DEQUANTIZE":
                self.constants[outputs[0]] = self.constants[inputs[0]].astype(np.float32)
            elif kind == "DENSIFY":
                src = self.constants[inputs[0]]
                self.constants[outputs[0]] = _densify(tflite, raw_tensors[inputs[0]], src,
                                                      self.shapes[outputs[0]])
            else:
                self.ops.append(Op(i, kind, inputs, outputs, _decode_options(tflite, kind, op, i)))
        self._consumers: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0 and t not in self.constants:
                    self._consumers.setdefault(t, []).append(op)

    def consumers(self, tensor: int) -> list[Op]:
        """Compute ops reading `tensor` as an activation (not as a constant)."""
        return list(self._consumers.get(tensor, []))

    def constant(self, tensor: int) -> np.ndarray:
        if tensor not in self.constants:
            raise GraphMismatch(f"tensor {tensor} ({self.names.get(tensor)}) is not a constant")
        return self.constants[tensor]


# --------------------------------------------------------------------------------------------------
# Layers with TFLite semantics
# --------------------------------------------------------------------------------------------------


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after); the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _apply(x: Tensor, activation: str) -> Tensor:
    """A fused TFLite activation."""
    if activation == "relu6":
        return F.relu6(x)
    if activation == "relu":
        return F.relu(x)
    return x


class TFConv2d(nn.Conv2d):
    """`nn.Conv2d` with TFLite's padding and fused activation.

    Symmetric padding uses the conv's own `padding`; uneven TF padding (SAME at stride 2 on an even
    input: the extra pixel bottom/right) is applied explicitly with `explicit_pad` = (left, right,
    top, bottom). `activation` is the op's fused activation ("none", "relu" or "relu6").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
                 stride: int = 1, groups: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
                 activation: str = "none") -> None:
        left, right, top, bottom = pad
        symmetric = left == right and top == bottom
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                         padding=(top, left) if symmetric else 0, bias=True)
        self.explicit_pad: tuple[int, int, int, int] | None = None if symmetric else pad
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.explicit_pad is not None:
            x = F.pad(x, self.explicit_pad)
        return _apply(super().forward(x), self.activation)

    def extra_repr(self) -> str:
        extra = f", explicit_pad={self.explicit_pad}" if self.explicit_pad else ""
        return f"{super().extra_repr()}{extra}, activation={self.activation}"


class BilinearUpsample(nn.Module):
    """RESIZE_BILINEAR to a fixed size with half-pixel centres (= PyTorch's align_corners=False)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


# --------------------------------------------------------------------------------------------------
# Binding named layers to the graph's ops
# --------------------------------------------------------------------------------------------------


class GraphBinder:
    """Walks the graph from the input, handing each named layer the op it corresponds to.

    Every op may be claimed once; `check_complete` then proves that no op was left out.
    """

    def __init__(self, graph: TFLiteGraph) -> None:
        self.graph = graph
        self.used: set[int] = set()
        self.source_ops: dict[str, int] = {}

    def _free(self, tensor: int, kind: str) -> list[Op]:
        """Unclaimed ops of `kind` reading `tensor` (a PAD may feed several convs: it stays available)."""
        return [op for op in self.graph.consumers(tensor)
                if op.kind == kind and (kind == "PAD" or op.index not in self.used)]

    def _claim(self, *ops: Op) -> None:
        for op in ops:
            if op.index in self.used:
                raise GraphMismatch(f"op {op.index} ({op.kind}) claimed twice")
            self.used.add(op.index)

    def conv_candidates(self, tensor: int, *, depthwise: bool) -> list[tuple[Op | None, Op]]:
        """Unclaimed (PAD or None, conv) pairs reading `tensor`; an explicit PAD is looked through."""
        kind = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
        found: list[tuple[Op | None, Op]] = [(None, op) for op in self._free(tensor, kind)]
        for pad in self._free(tensor, "PAD"):
            found += [(pad, op) for op in self._free(pad.outputs[0], kind)]
        return found

    def out_channels(self, op: Op) -> int:
        return self.graph.shapes[op.outputs[0]][-1]

    def conv(self, tensor: int, *, depthwise: bool, label: str,
             where: Callable[[Op], bool] | None = None) -> tuple[TFConv2d, int]:
        """Bind the one unclaimed conv reading `tensor` (that satisfies `where`): (layer, its output)."""
        found = [(pad, op) for pad, op in self.conv_candidates(tensor, depthwise=depthwise)
                 if where is None or where(op)]
        if len(found) != 1:
            raise GraphMismatch(f"{label}: expected one {'depthwise ' if depthwise else ''}conv reading "
                                f"tensor {tensor}, found ops {[op.index for _, op in found]}")
        pad, op = found[0]
        self._claim(op)
        if pad is not None:
            self.used.add(pad.index)
        self.source_ops[label] = op.index
        return self._build_conv(pad, op, depthwise=depthwise), op.outputs[0]

    def _build_conv(self, pad: Op | None, op: Op, *, depthwise: bool) -> TFConv2d:
        g = self.graph
        source = pad.inputs[0] if pad is not None else op.inputs[0]
        _, height, width, in_ch = g.shapes[source]
        weight = g.constant(op.inputs[1])
        bias = g.constant(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if op.options["dilation"] != (1, 1):
            raise GraphMismatch(f"op {op.index}: dilated convs are not supported")
        left = right = top = bottom = 0
        if pad is not None:
            amounts = g.constant(pad.inputs[1]).reshape(4, 2)
            if amounts[0].any() or amounts[3].any():
                raise GraphMismatch(f"op {pad.index}: PAD over batch or channels")
            (top, bottom), (left, right) = amounts[1].tolist(), amounts[2].tolist()
        stride_h, stride_w = op.options["stride"]
        if depthwise:
            _, kh, kw, out_ch = weight.shape  # 1HWC (C = in * depth multiplier)
            torch_weight = weight.transpose(3, 0, 1, 2)  # -> C1HW
            groups = in_ch
        else:
            out_ch, kh, kw, _ = weight.shape  # OHWI
            torch_weight = weight.transpose(0, 3, 1, 2)  # -> OIHW
            groups = 1
        if op.options["padding"] == "SAME":
            t, b = tf_same_padding(height + top + bottom, kh, stride_h)
            lft, r = tf_same_padding(width + left + right, kw, stride_w)
            top, bottom, left, right = top + t, bottom + b, left + lft, right + r
        if stride_h != stride_w:
            raise GraphMismatch(f"op {op.index}: unequal strides")
        layer = TFConv2d(in_ch, out_ch, (kh, kw), stride=stride_h, groups=groups,
                         pad=(left, right, top, bottom), activation=op.options["activation"])
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(torch_weight, dtype=np.float32)))
            assert layer.bias is not None
            if bias is not None:
                layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
            else:
                layer.bias.zero_()
        return layer

    def add(self, a: int, b: int, *, label: str) -> tuple[str, int] | None:
        """The unclaimed ADD of tensors a and b: (fused activation, output), or None if there is none."""
        found = [op for op in self._free(a, "ADD") if set(op.inputs) == {a, b}]
        if not found:
            return None
        self._claim(found[0])
        self.source_ops[label] = found[0].index
        return found[0].options["activation"], found[0].outputs[0]

    def one(self, tensor: int, kind: str, *, label: str) -> Op:
        """The one unclaimed op of `kind` reading `tensor`."""
        found = self._free(tensor, kind)
        if len(found) != 1:
            raise GraphMismatch(f"{label}: expected one {kind} reading tensor {tensor}, "
                                f"found ops {[op.index for op in found]}")
        self._claim(found[0])
        self.source_ops[label] = found[0].index
        return found[0]

    def resize(self, tensor: int, *, label: str) -> tuple[BilinearUpsample, int]:
        op = self.one(tensor, "RESIZE_BILINEAR", label=label)
        if op.options["align_corners"] or not op.options["half_pixel_centers"]:
            raise GraphMismatch(f"op {op.index}: only half-pixel-centre bilinear resizes are supported")
        height, width = (int(v) for v in self.graph.constant(op.inputs[1]))
        return BilinearUpsample((height, width)), op.outputs[0]

    def leads_to_output(self, op: Op, index: int,
                        through: tuple[str, ...] = ("RESHAPE", "LOGISTIC")) -> bool:
        """Whether op's output reaches graph output `index` through ops of the kinds `through` only."""
        frontier, target = [op.outputs[0]], self.graph.outputs[index]
        while frontier:
            tensor = frontier.pop()
            if tensor == target:
                return True
            frontier += [c.outputs[0] for c in self.graph.consumers(tensor) if c.kind in through]
        return False

    def leading_to(self, index: int,
                   through: tuple[str, ...] = ("RESHAPE", "LOGISTIC")) -> Callable[[Op], bool]:
        """A `where` filter: the op whose output becomes graph output `index` (through `through`)."""
        return lambda op: self.leads_to_output(op, index, through)

    def head_tail(self, tensor: int, *, label: str) -> list[str]:
        """Claim the RESHAPE/LOGISTIC ops after a head conv; returns their kinds in order."""
        kinds = []
        while tensor not in self.graph.outputs:
            nxt = [c for c in self.graph.consumers(tensor) if c.kind in ("RESHAPE", "LOGISTIC")]
            if len(nxt) != 1:
                raise GraphMismatch(f"{label}: tensor {tensor} does not lead to a graph output")
            self._claim(nxt[0])
            kinds.append(nxt[0].kind)
            tensor = nxt[0].outputs[0]
        return kinds

    def check_complete(self, ignore: Iterable[str] = ()) -> None:
        left = [op for op in self.graph.ops if op.index not in self.used and op.kind not in ignore]
        if left:
            raise GraphMismatch(f"ops not claimed by any layer: {[(op.index, op.kind) for op in left]}")


def _is_1x1(graph: TFLiteGraph, op: Op) -> bool:
    return graph.constant(op.inputs[1]).shape[1:3] == (1, 1)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


class SeparableConv(nn.Module):
    """Depthwise conv then 1x1 conv, each with its op's fused activation: the side-branch unit.

    The landmark network uses it (both ReLU6) for the decoder's laterals, the segmentation skip at
    128x128 and the entries of the segmentation and regression branches; the detector (linear
    depthwise) for its FPN laterals and anchor heads.
    """

    def __init__(self, depthwise: TFConv2d, pointwise: TFConv2d) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str, *,
             where: Callable[[Op], bool] | None = None) -> tuple[Self, int]:
        dw, t = b.conv(x, depthwise=True, label=f"{label}.depthwise", where=where)
        pw, t = b.conv(t, depthwise=False, label=f"{label}.pointwise")
        return cls(dw, pw), t


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6), depthwise k x k (ReLU6, stride 1 or 2), 1x1 linear
    projection, plus the input when the shapes allow (stride 1, same width). The encoder is made of them.
    """

    def __init__(self, expand: TFConv2d, depthwise: TFConv2d, project: TFConv2d, residual: bool) -> None:
        super().__init__()
        self.expand = expand
        self.depthwise = depthwise
        self.project = project
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    @staticmethod
    def matches(b: GraphBinder, x: int) -> bool:
        """Whether an inverted residual block starts at tensor x (expand -> depthwise -> project)."""
        g = b.graph
        for _, expand in b.conv_candidates(x, depthwise=False):
            if not _is_1x1(g, expand) or expand.options["activation"] != "relu6":
                continue
            for _, dw in b.conv_candidates(expand.outputs[0], depthwise=True):
                for _, project in b.conv_candidates(dw.outputs[0], depthwise=False):
                    if _is_1x1(g, project) and project.options["activation"] == "none":
                        return True
        return False

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, int]:
        expand, t = b.conv(x, depthwise=False, label=f"{label}.expand")
        dw, t = b.conv(t, depthwise=True, label=f"{label}.depthwise")
        project, t = b.conv(t, depthwise=False, label=f"{label}.project")
        added = b.add(t, x, label=f"{label}.add")
        if added is not None:
            activation, t = added
            if activation != "none":
                raise GraphMismatch(f"{label}: residual add with activation {activation}")
        return cls(expand, dw, project, residual=added is not None), t


class ResBlock(nn.Module):
    """Depthwise 3x3 then 1x1 (linear), added to the input, then ReLU6 (the add's fused activation).

    The landmark network's regression branch and segmentation refinement are stacks of them (ReLU6
    after the depthwise), the detector's FPN refinement too (linear depthwise).
    """

    def __init__(self, depthwise: TFConv2d, pointwise: TFConv2d) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(x + self.pointwise(self.depthwise(x)))

    @staticmethod
    def matches(b: GraphBinder, x: int) -> bool:
        for _, dw in b.conv_candidates(x, depthwise=True):
            if dw.options["stride"] != (1, 1):
                continue
            for _, pw in b.conv_candidates(dw.outputs[0], depthwise=False):
                if any(set(op.inputs) == {x, pw.outputs[0]} for op in b._free(x, "ADD")):
                    return True
        return False

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, int]:
        dw, t = b.conv(x, depthwise=True, label=f"{label}.depthwise",
                       where=lambda op: op.options["stride"] == (1, 1))
        pw, t = b.conv(t, depthwise=False, label=f"{label}.pointwise")
        added = b.add(t, x, label=f"{label}.add")
        if added is None or added[0] != "relu6":
            raise GraphMismatch(f"{label}: expected a residual ADD with ReLU6")
        return cls(dw, pw), added[1]

    @classmethod
    def bind_stack(cls, b: GraphBinder, x: int, label: str) -> tuple[nn.Sequential, int]:
        """As many ResBlocks as the graph chains from x."""
        blocks: list[ResBlock] = []
        while cls.matches(b, x):
            block, x = cls.bind(b, x, f"{label}.{len(blocks)}")
            blocks.append(block)
        if not blocks:
            raise GraphMismatch(f"{label}: no residual block at tensor {x}")
        return nn.Sequential(*blocks), x


class DownBlock(nn.Module):
    """Stride-2 residual block of the regression branch: depthwise 3x3 stride 2 (TF SAME: the extra
    padding pixel bottom/right) + 1x1, added to a 2x2 max-pool of the input, then ReLU6.
    """

    def __init__(self, depthwise: TFConv2d, pointwise: TFConv2d) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu6(self.pool(x) + self.pointwise(self.depthwise(x)))

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, int]:
        dw, t = b.conv(x, depthwise=True, label=f"{label}.depthwise",
                       where=lambda op: op.options["stride"] == (2, 2))
        pw, t = b.conv(t, depthwise=False, label=f"{label}.pointwise")
        pool = b.one(x, "MAX_POOL_2D", label=f"{label}.pool")
        if pool.options["filter"] != (2, 2) or pool.options["stride"] != (2, 2) or \
                pool.options["padding"] != "VALID":
            raise GraphMismatch(f"{label}: expected a 2x2 stride-2 VALID max pool")
        added = b.add(t, pool.outputs[0], label=f"{label}.add")
        if added is None or added[0] != "relu6":
            raise GraphMismatch(f"{label}: expected ADD(pool, conv) with ReLU6")
        return cls(dw, pw), added[1]


# --------------------------------------------------------------------------------------------------
# The network's parts
# --------------------------------------------------------------------------------------------------


class EncoderFeatures(NamedTuple):
    """Encoder outputs at each resolution (NCHW): the decoder and the branches read these."""

    s128: Tensor  # [N,16,128,128]
    s64: Tensor  # [N,24,64,64]
    s32: Tensor  # [N,32,32,32]
    s16: Tensor  # [N,88,16,16]
    s8: Tensor  # [N,864,8,8]: the bottleneck, shared by the decoder and the regression branch


class Stem(nn.Module):
    """3x3 stride-2 conv (ReLU6; the file pads 1 pixel all round explicitly), then a depthwise 3x3
    (ReLU6) and a linear 1x1 projection to 16 channels: MobileNetV2's first, unexpanded block.
    """

    def __init__(self, conv: TFConv2d, depthwise: TFConv2d, project: TFConv2d) -> None:
        super().__init__()
        self.conv = conv
        self.depthwise = depthwise
        self.project = project

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.depthwise(self.conv(x)))

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, int]:
        conv, t = b.conv(x, depthwise=False, label=f"{label}.conv")
        dw, t = b.conv(t, depthwise=True, label=f"{label}.depthwise")
        project, t = b.conv(t, depthwise=False, label=f"{label}.project")
        return cls(conv, dw, project), t


class Encoder(nn.Module):
    """MobileNetV2-like encoder 256 -> 128 -> 64 -> 32 -> 16 -> 8 (8x8x864).

    One stage per resolution, each a stride-2 inverted residual and the stride-1 ones after it, as
    the graph chains them (2, 2, 6 and 4 blocks); `tail` (1x1 expand to 864 + depthwise 3x3, both
    ReLU6) ends it with the bottleneck that both the decoder and the regression branch read.
    """

    STAGES = ("stage64", "stage32", "stage16", "stage8")

    def __init__(self, stem: Stem, stages: dict[str, nn.Sequential], tail: nn.Sequential) -> None:
        super().__init__()
        self.stem = stem
        self.stage64 = stages["stage64"]
        self.stage32 = stages["stage32"]
        self.stage16 = stages["stage16"]
        self.stage8 = stages["stage8"]
        self.tail = tail

    def forward(self, x: Tensor) -> EncoderFeatures:
        s128 = self.stem(x)
        s64 = self.stage64(s128)
        s32 = self.stage32(s64)
        s16 = self.stage16(s32)
        s8 = self.tail(self.stage8(s16))
        return EncoderFeatures(s128, s64, s32, s16, s8)

    @classmethod
    def bind(cls, b: GraphBinder, x: int, label: str) -> tuple[Self, dict[str, int]]:
        stem, t = Stem.bind(b, x, f"{label}.stem")
        tensors = {"s128": t}
        stages: dict[str, nn.Sequential] = {}
        for name in cls.STAGES:
            stages[name], t = bind_stage(b, t, f"{label}.{name}")
            tensors["s" + name.removeprefix("stage")] = t
        expand, t = b.conv(t, depthwise=False, label=f"{label}.tail.0")
        dw, t = b.conv(t, depthwise=True, label=f"{label}.tail.1")
        tensors["s8"] = t
        return cls(stem, stages, nn.Sequential(expand, dw)), tensors


def bind_stage(b: GraphBinder, x: int, label: str) -> tuple[nn.Sequential, int]:
    """One encoder stage from tensor x: a stride-2 inverted residual and the stride-1 ones after it."""
    blocks: list[InvertedResidual] = []
    while InvertedResidual.matches(b, x):
        block, nxt = InvertedResidual.bind(b, x, f"{label}.{len(blocks)}")
        stride = block.depthwise.stride[0]
        if (stride == 2) != (not blocks):
            raise GraphMismatch(f"{label}: block {len(blocks)} has stride {stride}")
        blocks.append(block)
        x = nxt
        if _next_is_downsampling(b, x):
            break
    if not blocks:
        raise GraphMismatch(f"{label}: no inverted residual block at tensor {x}")
    return nn.Sequential(*blocks), x


def _next_is_downsampling(b: GraphBinder, x: int) -> bool:
    """Whether the inverted residual starting at x has a stride-2 depthwise (a new stage)."""
    for _, expand in b.conv_candidates(x, depthwise=False):
        for _, dw in b.conv_candidates(expand.outputs[0], depthwise=True):
            if dw.options["stride"] == (2, 2):
                return True
    return False


class Decoder(nn.Module):
    """FPN-like top-down path from the 8x8 bottleneck to the 64x64x48 feature (TFLite tensor 279).

    Each resolution's encoder feature goes through a lateral separable conv to 48 channels; the coarser
    map is upsampled 2x (bilinear, half-pixel centres) and added, with no activation after the add.
    Its output feeds the heatmap head and the segmentation branch.
    """

    def __init__(self, laterals: dict[str, SeparableConv], ups: dict[str, BilinearUpsample]) -> None:
        super().__init__()
        self.lateral8 = laterals["lateral8"]
        self.lateral16 = laterals["lateral16"]
        self.lateral32 = laterals["lateral32"]
        self.lateral64 = laterals["lateral64"]
        self.up16 = ups["up16"]
        self.up32 = ups["up32"]
        self.up64 = ups["up64"]

    def forward(self, feats: EncoderFeatures) -> Tensor:
        x = self.lateral8(feats.s8)
        x = self.up16(x) + self.lateral16(feats.s16)
        x = self.up32(x) + self.lateral32(feats.s32)
        return self.up64(x) + self.lateral64(feats.s64)

    @classmethod
    def bind(cls, b: GraphBinder, feats: dict[str, int], label: str) -> tuple[Self, int]:
        laterals: dict[str, SeparableConv] = {}
        ups: dict[str, BilinearUpsample] = {}
        # At the bottleneck the decoder's lateral and the regression entry are both depthwise 3x3
        # convs; the decoder's is the one whose 1x1 that follows makes the 48 channels of the laterals.
        width = _decoder_width(b, feats["s16"])
        laterals["lateral8"], x = SeparableConv.bind(
            b, feats["s8"], f"{label}.lateral8",
            where=lambda op: any(b.out_channels(pw) == width
                                 for _, pw in b.conv_candidates(op.outputs[0], depthwise=False)))
        for res in ("16", "32", "64"):
            ups[f"up{res}"], up = b.resize(x, label=f"{label}.up{res}")
            laterals[f"lateral{res}"], lat = SeparableConv.bind(b, feats[f"s{res}"], f"{label}.lateral{res}")
            added = b.add(up, lat, label=f"{label}.add{res}")
            if added is None or added[0] != "none":
                raise GraphMismatch(f"{label}: expected ADD(upsampled, lateral{res}) without activation")
            x = added[1]
        return cls(laterals, ups), x


def _decoder_width(b: GraphBinder, s16: int) -> int:
    (_, dw), = b.conv_candidates(s16, depthwise=True)
    (_, pw), = b.conv_candidates(dw.outputs[0], depthwise=False)
    return b.out_channels(pw)


class RegressionTrunk(nn.Module):
    """The branch from the 8x8 bottleneck down to the 2x2x288 feature (TFLite tensor 335) that the
    2x2 landmark, world and pose-flag convs read: a separable conv to 288, then twice a stride-2
    `DownBlock` followed by a stack of `ResBlock`s (4 at 4x4, 5 at 2x2).
    """

    def __init__(self, entry: SeparableConv, down4: DownBlock, blocks4: nn.Sequential,
                 down2: DownBlock, blocks2: nn.Sequential) -> None:
        super().__init__()
        self.entry = entry
        self.down4 = down4
        self.blocks4 = blocks4
        self.down2 = down2
        self.blocks2 = blocks2

    def forward(self, s8: Tensor) -> Tensor:
        x = self.entry(s8)
        x = self.blocks4(self.down4(x))
        return self.blocks2(self.down2(x))

    @classmethod
    def bind(cls, b: GraphBinder, s8: int, label: str) -> tuple[Self, int]:
        entry, x = SeparableConv.bind(b, s8, f"{label}.entry")
        down4, x = DownBlock.bind(b, x, f"{label}.down4")
        blocks4, x = ResBlock.bind_stack(b, x, f"{label}.blocks4")
        down2, x = DownBlock.bind(b, x, f"{label}.down2")
        blocks2, x = ResBlock.bind_stack(b, x, f"{label}.blocks2")
        return cls(entry, down4, blocks4, down2, blocks2), x


class SegmentationBranch(nn.Module):
    """From the 64x64x48 decoder feature to 256x256 person-segmentation logits.

    A separable conv to 8 channels, 2x upsampling plus a skip (separable conv on the 128x128 stem
    output), two `ResBlock`s, 2x upsampling to 256, two more `ResBlock`s and a 3x3 conv to one logit.
    Optional (`load_landmark_net(segmentation=True)`): a pose student does not need it.
    """

    def __init__(self, entry: SeparableConv, skip128: SeparableConv, up128: BilinearUpsample,
                 refine128: nn.Sequential, up256: BilinearUpsample, refine256: nn.Sequential,
                 logits: TFConv2d) -> None:
        super().__init__()
        self.entry = entry
        self.skip128 = skip128
        self.up128 = up128
        self.refine128 = refine128
        self.up256 = up256
        self.refine256 = refine256
        self.logits = logits

    def forward(self, decoder_feature: Tensor, s128: Tensor) -> Tensor:
        x = self.up128(self.entry(decoder_feature)) + self.skip128(s128)
        x = self.refine256(self.up256(self.refine128(x)))
        return self.logits(x)

    @classmethod
    def bind(cls, b: GraphBinder, decoder_out: int, s128: int, label: str) -> tuple[Self, int]:
        entry, x = SeparableConv.bind(b, decoder_out, f"{label}.entry")
        up128, x = b.resize(x, label=f"{label}.up128")
        skip, s = SeparableConv.bind(b, s128, f"{label}.skip128")
        added = b.add(x, s, label=f"{label}.add128")
        if added is None or added[0] != "none":
            raise GraphMismatch(f"{label}: expected ADD(upsampled, skip128) without activation")
        refine128, x = ResBlock.bind_stack(b, added[1], f"{label}.refine128")
        up256, x = b.resize(x, label=f"{label}.up256")
        refine256, x = ResBlock.bind_stack(b, x, f"{label}.refine256")
        logits, x = b.conv(x, depthwise=False, label=f"{label}.logits")
        return cls(entry, skip, up128, refine128, up256, refine256, logits), x


# --------------------------------------------------------------------------------------------------
# The whole network
# --------------------------------------------------------------------------------------------------


class LandmarkOutputs(NamedTuple):
    """The TFLite model's five outputs, NCHW where spatial, values as the interpreter gives them."""

    landmarks: Tensor  # [N,39,5]: x, y, z, visibility, presence (raw logits) in 256-px crop coordinates
    pose_flag: Tensor  # [N,1] after the sigmoid
    heatmaps: Tensor  # [N,39,64,64]
    world: Tensor  # [N,39,3] world landmarks (metres, hip-centred)
    segmentation: Tensor | None  # [N,1,256,256] logits; None when built without the branch


# Graph output order of pose_landmark_full.tflite: Identity, Identity_1, Identity_2, Identity_3, Identity_4.
_OUT_LANDMARKS, _OUT_POSE_FLAG, _OUT_SEGMENTATION, _OUT_HEATMAPS, _OUT_WORLD = range(5)


class BlazePoseLandmarkNet(nn.Module):
    """BlazePose GHUM "full" landmark network, op for op: input [N,3,256,256] RGB in [0,1].

    Parts: `encoder` (MobileNetV2-like, to 8x8x864), `decoder` (to the 64x64x48 feature),
    `heatmap_conv` (1x1, 48 -> 39 heatmaps), `regression` (to the 2x2x288 feature) with the 2x2 heads
    `landmark_conv` (195 = 39 x 5), `world_conv` (117 = 39 x 3) and `pose_flag_conv` (1, then a
    sigmoid), and the optional `segmentation` branch. `features(x)` gives the two features a new
    head can be put on; `source_ops` maps each layer to the TFLite op it was read from.
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, heatmap_conv: nn.Conv2d,
                 regression: RegressionTrunk, landmark_conv: nn.Conv2d, world_conv: nn.Conv2d,
                 pose_flag_conv: nn.Conv2d, segmentation: SegmentationBranch | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.heatmap_conv = heatmap_conv
        self.regression = regression
        self.landmark_conv = landmark_conv
        self.world_conv = world_conv
        self.pose_flag_conv = pose_flag_conv
        self.segmentation = segmentation
        self.source_sha256 = ""
        self.source_ops: dict[str, int] = {}

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(decoder feature [N,48,64,64] = TFLite tensor 279, regression feature [N,288,2,2] = tensor
        335), without the segmentation branch or any head."""
        feats = self.encoder(x)
        return self.decoder(feats), self.regression(feats.s8)

    def forward(self, x: Tensor) -> LandmarkOutputs:
        if x.shape[-3:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected input [N,3,{INPUT_SIZE},{INPUT_SIZE}], got {list(x.shape)}")
        feats = self.encoder(x)
        decoded = self.decoder(feats)
        trunk = self.regression(feats.s8)
        n = x.shape[0]
        return LandmarkOutputs(
            landmarks=self.landmark_conv(trunk).reshape(n, NUM_LANDMARKS, 5),
            pose_flag=torch.sigmoid(self.pose_flag_conv(trunk)).reshape(n, 1),
            heatmaps=self.heatmap_conv(decoded),
            world=self.world_conv(trunk).reshape(n, NUM_LANDMARKS, 3),
            segmentation=self.segmentation(decoded, feats.s128) if self.segmentation is not None else None,
        )

    @classmethod
    def from_graph(cls, graph: TFLiteGraph, *, segmentation: bool = False) -> Self:
        """Bind every layer to its op of `graph`; raises GraphMismatch if the graph differs."""
        b = GraphBinder(graph)
        (source,) = graph.inputs
        if graph.shapes[source] != (1, INPUT_SIZE, INPUT_SIZE, 3) or len(graph.outputs) != 5:
            raise GraphMismatch(f"not a BlazePose landmark graph: input {graph.shapes[source]}, "
                                f"{len(graph.outputs)} outputs")
        encoder, feats = Encoder.bind(b, source, "encoder")
        # Bound before the decoder so that the regression entry and the decoder's lateral8 (both
        # depthwise 3x3 on the bottleneck) are told apart by where they lead.
        decoder, decoded = Decoder.bind(b, feats, "decoder")
        regression, trunk = RegressionTrunk.bind(b, feats["s8"], "regression")
        heads = {}
        for name, index, reads in (("heatmap_conv", _OUT_HEATMAPS, decoded),
                                   ("landmark_conv", _OUT_LANDMARKS, trunk),
                                   ("world_conv", _OUT_WORLD, trunk),
                                   ("pose_flag_conv", _OUT_POSE_FLAG, trunk)):
            layer, out = b.conv(reads, depthwise=False, label=name, where=b.leading_to(index))
            tail = b.head_tail(out, label=name)
            if tail != (["LOGISTIC", "RESHAPE"] if index == _OUT_POSE_FLAG else
                        [] if index == _OUT_HEATMAPS else ["RESHAPE"]):
                raise GraphMismatch(f"{name}: unexpected ops after the conv: {tail}")
            heads[name] = _plain_conv(layer, name)
        seg, seg_out = SegmentationBranch.bind(b, decoded, feats["s128"], "segmentation")
        if seg_out != graph.outputs[_OUT_SEGMENTATION]:
            raise GraphMismatch("segmentation branch does not end at the segmentation output")
        b.check_complete()
        net = cls(encoder, decoder, heads["heatmap_conv"], regression, heads["landmark_conv"],
                  heads["world_conv"], heads["pose_flag_conv"], seg if segmentation else None)
        net.source_sha256 = graph.sha256
        net.source_ops = {k: v for k, v in b.source_ops.items()
                          if segmentation or not k.startswith("segmentation.")}
        return net.eval()


def _plain_conv(layer: TFConv2d, name: str) -> nn.Conv2d:
    """A head conv as a plain nn.Conv2d (no padding, no activation), to initialise new heads from."""
    if layer.explicit_pad is not None or layer.padding != (0, 0) or layer.activation != "none":
        raise GraphMismatch(f"{name}: expected an unpadded conv without activation")
    kh, kw = layer.kernel_size[0], layer.kernel_size[1]
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, (kh, kw), bias=True)
    conv.load_state_dict(layer.state_dict())
    return conv


def load_landmark_net(path: Path | None = None, *, segmentation: bool = False) -> BlazePoseLandmarkNet:
    """Convert `pose_landmark_full.tflite` (default: the one in the installed mediapipe wheel) to a
    `BlazePoseLandmarkNet` in eval mode; `segmentation` keeps the 256x256 segmentation branch."""
    graph = TFLiteGraph(path if path is not None else landmark_model_path())
    return BlazePoseLandmarkNet.from_graph(graph, segmentation=segmentation)
