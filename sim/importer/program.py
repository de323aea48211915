"""An ONNX model as a program of engine layers and host layers (:func:`import_model`).

The graph's nodes are taken in their (topological) order. A quantized linear layer becomes an
engine layer:

- ``QLinearConv``, ``QLinearMatMul`` and ONNX Runtime's ``QGemm`` (with an output scale):
  requantized 8-bit outputs;
- ``MatMulInteger``, ``ConvInteger``: raw int32 outputs;
- the QDQ form, ``DequantizeLinear`` on the activation and on the weight (and an int32 bias) in
  front of ``Conv``, ``MatMul`` or ``Gemm`` and one ``QuantizeLinear`` behind it: folded into the
  integer layer ``QLinearConv`` / ``QLinearMatMul`` would state (which is what ONNX Runtime
  runs for it, too);
- a ``Relu`` or ``Clip`` right behind one of these, whose input nobody else reads, goes into the
  layer: into the post-processor's clamp (8-bit outputs) or its ReLU (int32 outputs).

Every other node runs on the host, through ONNX's own reference implementation of the
operator (``onnx.reference``, numpy), or, for the ``com.microsoft`` operators ONNX Runtime's
quantizer writes, through :mod:`mxe.sim.importer.host_ops`. An operator that neither can run is
refused at import with :class:`UnsupportedOperator`, one line naming the operator and the node.

An engine layer whose inputs turn out at run time to need what the engine lacks (a per-row
activation scale, a 3-D convolution, ...) runs its original nodes on the host instead, and the
report says why.
"""

from dataclasses import dataclass, field


__all__ = ["import_model", "Program", "EngineLayer", "HostLayer", "UnsupportedOperator",
           "ENGINE_OPERATORS"]

#: Operators that run on the engine, and the forms around them that are folded in.
ENGINE_OPERATORS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
                    "QGemm (com.microsoft, with an output scale)",
                    "DequantizeLinear -> Conv/MatMul/Gemm -> QuantizeLinear (QDQ)",
                    "Relu, Clip (fused)")


class UnsupportedOperator(ValueError):
    """A node neither the engine nor the host can run."""


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class HostLayer:
    """One node run on the host by ``onnx.reference``."""
    node: object
    evaluator: object
    where: str = "host"

    @property
    def name(self):
        return self.node.name or self.node.output[0]

    @property
    def op(self):
        return self.node.op_type

    @property
    def inputs(self):
        return [i for i in self.node.input if i]

    @property
    def outputs(self):
        return list(self.node.output)

    def run(self, values):
        feeds = {i: values[i] for i in self.node.input if i}
        results = self.evaluator.run(None, feeds)
        return dict(zip(self.node.output, results))


@dataclass
class EngineLayer:
    """A quantized linear layer on the engine, with the names of its operands.

    ``kind`` is ``"matmul"`` or ``"conv"``; ``x``, ``w`` name the activation and the weight
    tensors (integer), ``*_scale`` / ``*_zero`` their scales and zero points (``None``: absent,
    0), ``bias`` an int32 bias (``None``: none). ``y_scale`` ``None`` means raw int32 outputs.
    ``trans_b``: the weight is stored (N, K) (Gemm's transB). ``clip``: integer range fused
    from a Relu or Clip, ``relu``: a Relu on int32 outputs. ``nodes``: the original nodes, run
    on the host when the engine cannot take the layer.
    """
    name: str
    op: str
    kind: str
    x: str
    w: str
    output: str
    nodes: list
    x_scale: str | None = None
    x_zero: str | None = None
    w_scale: str | None = None
    w_zero: str | None = None
    y_scale: str | None = None
    y_zero: str | None = None
    y_type: str | None = None
    bias: str | None = None
    bias_scale: str | None = None
    trans_b: bool = False
    attrs: dict = field(default_factory=dict)
    clip: tuple | None = None
    clip_float: tuple | None = None
    relu: bool = False
    w_axis: int | None = None           # QDQ: the weight DequantizeLinear's axis
    w_axis_wanted: int | None = None
    fused: list = field(default_factory=list)
    fallback: list = field(default_factory=list)       # HostLayers of ``nodes``
    where: str = "engine"

    @property
    def inputs(self):
        names = [self.x, self.w, self.x_scale, self.x_zero, self.w_scale, self.w_zero,
                 self.y_scale, self.y_zero, self.bias, self.bias_scale]
        names += [i for node in self.nodes for i in node.input if i]
        return [n for n in dict.fromkeys(names) if n]

    @property
    def outputs(self):
        return [self.output]


@dataclass
class Program:
    """What :func:`import_model` returns: the layers in order, the graph's inputs (without the
    initializers) and outputs, and the constant values (initializers)."""
    model: object
    layers: list
    inputs: list
    outputs: list
    constants: dict

    def placement(self):
        """``[(layer name, operator, where)]``."""
        return [(layer.name, layer.op, layer.where) for layer in self.layers]

    def summary(self):
        engine = [l for l in self.layers if isinstance(l, EngineLayer)]
        host = [l for l in self.layers if isinstance(l, HostLayer)]
        return f"{len(engine)} layers on the engine, {len(host)} on the host"


def _opsets(model):
    return {o.domain or "": o.version for o in model.opset_import}


def _host_layer(node, opsets):
    from onnx.reference import ReferenceEvaluator

    from mxe.sim.importer.host_ops import HOST_OPS
    domain = node.domain or ""
    name = node.name or node.output[0]
    for attr in node.attribute:
        if attr.g.node or attr.graphs:
            raise UnsupportedOperator(f"operator {node.op_type} in node '{name}': control flow "
                                      f"(subgraphs) is not supported on the engine or the host")
    try:
        evaluator = ReferenceEvaluator(node, opsets=opsets, new_ops=HOST_OPS)
    except (NotImplementedError, RuntimeError, KeyError, TypeError) as exc:
        where = f" (domain {domain})" if domain else ""
        raise UnsupportedOperator(f"operator {node.op_type}{where} in node '{name}': neither "
                                  f"the engine nor the host can run it ({_first_line(exc)})"
                                  ) from None
    return HostLayer(node, evaluator)


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _input(node, index):
    return node.input[index] if len(node.input) > index and node.input[index] else None


class _Graph:
    def __init__(self, model):
        g = model.graph
        self.nodes = list(g.node)
        self.constants = {t.name: t for t in g.initializer}
        self.outputs = {o.name for o in g.output}
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def only_consumer(self, tensor):
        """The single node that reads ``tensor``, if it is not a graph output either."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and tensor not in self.outputs:
            return users[0]
        return None

    def constant(self, name):
        from onnx import numpy_helper
        if name in self.constants:
            return numpy_helper.to_array(self.constants[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            from onnx.reference import ReferenceEvaluator
            return ReferenceEvaluator(node).run(None, {})[0]
        return None


def _clip_of(g, node, tensor):
    """A Relu or Clip reading only ``tensor`` (nobody else reads it): ``(node, lo, hi)`` with
    ``None`` for an open end, or ``None``."""
    user = g.only_consumer(tensor)
    if user is None or (user.domain or "") != "":
        return None
    if user.op_type == "Relu":
        return user, 0, None
    if user.op_type == "Clip":
        attrs = _attrs(user)
        lo, hi = attrs.get("min"), attrs.get("max")
        for index, slot in ((1, "lo"), (2, "hi")):
            name = _input(user, index)
            if name is not None:
                value = g.constant(name)
                if value is None:
                    return None
                if slot == "lo":
                    lo = value.item()
                else:
                    hi = value.item()
        return user, lo, hi
    return None


def _qlinear_layer(g, node):
    op = node.op_type
    attrs = _attrs(node)
    if op == "QLinearConv":
        layer = EngineLayer(node.name or node.output[0], op, "conv", node.input[0],
                            node.input[3], node.output[0], [node], x_scale=node.input[1],
                            x_zero=_input(node, 2), w_scale=node.input[4],
                            w_zero=_input(node, 5), y_scale=node.input[6],
                            y_zero=_input(node, 7), bias=_input(node, 8), attrs=attrs)
    elif op == "QLinearMatMul":
        layer = EngineLayer(node.name or node.output[0], op, "matmul", node.input[0],
                            node.input[3], node.output[0], [node], x_scale=node.input[1],
                            x_zero=_input(node, 2), w_scale=node.input[4],
                            w_zero=_input(node, 5), y_scale=node.input[6],
                            y_zero=_input(node, 7))
    elif op == "MatMulInteger":
        layer = EngineLayer(node.name or node.output[0], op, "matmul", node.input[0],
                            node.input[1], node.output[0], [node], x_zero=_input(node, 2),
                            w_zero=_input(node, 3))
    elif op == "QGemm":
        layer = EngineLayer(node.name or node.output[0], op, "matmul", node.input[0],
                            node.input[3], node.output[0], [node], x_scale=node.input[1],
                            x_zero=_input(node, 2), w_scale=node.input[4],
                            w_zero=_input(node, 5), bias=_input(node, 6),
                            y_scale=_input(node, 7), y_zero=_input(node, 8),
                            trans_b=bool(attrs.get("transB", 0)))
    else:  # ConvInteger
        layer = EngineLayer(node.name or node.output[0], op, "conv", node.input[0],
                            node.input[1], node.output[0], [node], x_zero=_input(node, 2),
                            w_zero=_input(node, 3), attrs=attrs)
    clip = _clip_of(g, node, node.output[0])
    if clip is not None:
        user, lo, hi = clip
        if layer.y_scale is None:
            # int32 outputs: only a ReLU (Clip(0, none)) maps onto the post-processor.
            if lo == 0 and hi is None:
                layer.relu = True
                layer.fused, layer.output = [user], user.output[0]
                layer.nodes.append(user)
        elif all(v is None or float(v).is_integer() for v in (lo, hi)):
            layer.clip = (lo, hi)
            layer.fused, layer.output = [user], user.output[0]
            layer.nodes.append(user)
    return layer


def _dq(g, tensor):
    """The DequantizeLinear node producing ``tensor`` (with an integer input), or None."""
    node = g.producer.get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or (node.domain or "") != "":
        return None
    return node


def _qdq_layer(g, node):
    """The QDQ pattern around a Conv, MatMul or Gemm, as an :class:`EngineLayer`; None if the
    node does not have it."""
    op = node.op_type
    attrs = _attrs(node)
    if op == "Gemm":
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or \
                attrs.get("transA", 0):
            return None
    dx, dw = _dq(g, node.input[0]), _dq(g, node.input[1])
    if dx is None or dw is None:
        return None
    bias_node = None
    bias_name = _input(node, 2) if op in ("Conv", "Gemm") else None
    if bias_name is not None:
        bias_node = _dq(g, bias_name)
        if bias_node is None:
            return None     # a float bias: no exact integer form
    # Behind it: optionally a Relu or Clip, then one QuantizeLinear.
    out = node.output[0]
    nodes_after = []
    clip = _clip_of(g, node, out)
    clip_float = None
    if clip is not None:
        user, lo, hi = clip
        clip_float = (lo, hi)
        nodes_after.append(user)
        out = user.output[0]
    q = g.only_consumer(out)
    if q is None or q.op_type != "QuantizeLinear" or (q.domain or "") != "":
        return None
    kind = "conv" if op == "Conv" else "matmul"
    layer = EngineLayer(
        node.name or node.output[0], f"{op} (QDQ)", kind, dx.input[0], dw.input[0],
        q.output[0], [dx, dw, *([bias_node] if bias_node is not None else []), node,
                      *nodes_after, q],
        x_scale=dx.input[1], x_zero=_input(dx, 2), w_scale=dw.input[1], w_zero=_input(dw, 2),
        y_scale=q.input[1], y_zero=_input(q, 2),
        bias=None if bias_node is None else bias_node.input[0],
        bias_scale=None if bias_node is None else bias_node.input[1],
        trans_b=bool(attrs.get("transB", 0)) if op == "Gemm" else False,
        attrs=attrs if op == "Conv" else {}, clip_float=clip_float,
        fused=[dx.name or dx.output[0], dw.name or dw.output[0], *(n.name or n.output[0]
                                                                   for n in nodes_after),
               q.name or q.output[0]])
    q_attrs = _attrs(q)
    if q_attrs.get("saturate", 1) != 1 or q_attrs.get("output_dtype", 0) not in (0, 2, 3) or \
            (layer.y_zero is None and q_attrs.get("output_dtype", 0) == 3):
        return None
    w_attrs = _attrs(dw)
    if w_attrs.get("block_size", 0) or _attrs(dx).get("block_size", 0):
        return None
    # A per-channel weight scale must run along the output channels: axis 0 of a Conv's
    # weights (Cout, ...) and of a Gemm's transposed B (N, K), the last axis of a MatMul's.
    layer.w_axis = w_attrs.get("axis", 1)
    layer.w_axis_wanted = 0 if op == "Conv" or layer.trans_b else -1
    return layer


def import_model(model):
    """Map an ONNX model onto the engine and the host.

    Parameters
    ----------
    model : onnx.ModelProto, str or path

    Returns
    -------
    Program

    Raises
    ------
    UnsupportedOperator
        A node neither the engine nor the host can run (one line naming operator and node).
    """
    import onnx
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    opsets = _opsets(model)
    g = _Graph(model)
    taken = set()            # nodes consumed by an engine layer
    layers = []
    for node in g.nodes:
        if id(node) in taken:
            continue
        domain = node.domain or ""
        layer = None
        attrs = _attrs(node)
        if domain == "" and node.op_type in ("QLinearConv", "QLinearMatMul", "MatMulInteger",
                                             "ConvInteger"):
            layer = _qlinear_layer(g, node)
        elif domain == "com.microsoft" and node.op_type == "QGemm" and \
                attrs.get("alpha", 1.0) == 1.0 and not attrs.get("transA", 0) and \
                _input(node, 7) is not None:
            layer = _qlinear_layer(g, node)
        elif domain == "" and node.op_type in ("Conv", "MatMul", "Gemm"):
            layer = _qdq_layer(g, node)
        if layer is not None:
            # The DequantizeLinear nodes in front were already seen (they come first): they
            # stay host layers, computed only if someone still reads their output.
            for n in layer.nodes:
                if n is not node and n.op_type != "DequantizeLinear":
                    taken.add(id(n))
            layer.fallback = [_host_layer(n, opsets) for n in layer.nodes]
            layers.append(layer)
            continue
        layers.append(_host_layer(node, opsets))
    constants = {}
    from onnx import numpy_helper
    for t in model.graph.initializer:
        constants[t.name] = numpy_helper.to_array(t)
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    outputs = [o.name for o in model.graph.output]
    return Program(model, _live(layers, outputs), inputs, outputs, constants)


def _live(layers, outputs):
    """The layers whose outputs someone needs (the DequantizeLinear nodes a folded layer
    replaced drop out unless another layer reads them)."""
    needed = set(outputs)
    keep = []
    for layer in reversed(layers):
        if any(o in needed for o in layer.outputs):
            keep.append(layer)
            needed.update(layer.inputs if isinstance(layer, HostLayer) else
                          _engine_reads(layer))
    return keep[::-1]


def _engine_reads(layer):
    names = [layer.x, layer.w, layer.x_scale, layer.x_zero, layer.w_scale, layer.w_zero,
             layer.y_scale, layer.y_zero, layer.bias, layer.bias_scale]
    return [n for n in names if n] + [i for n in layer.nodes
                                      if n.op_type == "Clip" for i in n.input[1:] if i]

