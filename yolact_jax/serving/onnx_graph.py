"""Exact clean-ups of a converted ONNX graph, so that ONNX Runtime can fuse and skip work.

jax2onnx writes JAX's explicit broadcasts as they are: a per-channel BatchNorm constant becomes
a ``Reshape`` + ``Expand`` to the activation's full shape, a scalar 0 in ``jnp.where`` a constant
of the full output shape (123 MB for 100 masks on a 480x640 canvas). ONNX operators broadcast by
themselves, and ONNX Runtime fuses a ``Conv`` with a following per-channel ``Mul`` / ``Add`` only
when the constant has the per-channel shape. :func:`simplify` rewrites, each step giving the
same values to the bit:

* an ``Expand`` whose consumers are all broadcasting element-wise operators, and whose other
  inputs already give the expanded shape, is bypassed (the consumers read its input); so is one
  that only broadcasts the batch dimensions of a ``MatMul`` operand;
* an initializer read only by broadcasting element-wise operators is cut to size 1 along every
  axis on which its values repeat, where another input of each consumer has that axis;
* ``Sub(x, c)`` with a floating-point initializer ``c`` becomes ``Add(x, -c)`` (ONNX Runtime
  fuses a ``Conv`` with a following ``Add``, not ``Sub``), and ``Max(x, 0)`` (JAX's ReLU)
  becomes ``Relu(x)`` (which it fuses too);
* nodes and initializers nothing reads are dropped.

With these, each frozen BatchNorm (``(x - mean) * scale + bias``) and ReLU folds into its
convolution in ONNX Runtime, and the program's file is half the size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Element-wise operators with numpy broadcasting over all their inputs.
BROADCASTING = frozenset({'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where', 'And',
                          'Or', 'Xor', 'Equal', 'Greater', 'GreaterOrEqual', 'Less',
                          'LessOrEqual', 'BitShift'})

Shape = list  # of int, or None for an unknown dimension


def _static_shapes(model: Any) -> dict[str, Shape]:
  """Every value's shape that ONNX shape inference knows (initializers included)."""
  from onnx import shape_inference
  inferred = shape_inference.infer_shapes(model, data_prop=True).graph
  shapes: dict[str, Shape] = {}
  for info in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
    tensor = info.type.tensor_type
    if tensor.HasField('shape'):
      shapes[info.name] = [d.dim_value if d.HasField('dim_value') else None
                           for d in tensor.shape.dim]
  for init in inferred.initializer:
    shapes[init.name] = list(init.dims)
  return shapes


def _broadcast(shapes: list[Shape]) -> Shape | None:
  """numpy's broadcast of static shapes; None if a dimension is unknown or they clash."""
  rank = max(len(s) for s in shapes)
  out = []
  for k in range(rank, 0, -1):
    dims = {s[-k] for s in shapes if len(s) >= k}
    if None in dims or len(dims - {1}) > 1:
      return None
    out.append(max(dims))
  return out


def _subgraph_names(graph: Any) -> set[str]:
  """Every value name read inside the node attributes' subgraphs (``Loop``, ``If`` bodies)."""
  from onnx import AttributeProto
  names: set[str] = set()
  for node in graph.node:
    for attr in node.attribute:
      bodies = ([attr.g] if attr.type == AttributeProto.GRAPH else
                list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
      for body in bodies:
        for inner in body.node:
          names.update(inner.input)
        names |= _subgraph_names(body)
  return names


def simplify(model: Any) -> dict[str, int]:
  """Rewrites ``model`` (an ONNX ModelProto) in place as the module says; returns how many of
  each rewrite it made."""
  from onnx import numpy_helper
  graph = model.graph
  shapes = _static_shapes(model)
  pinned = _subgraph_names(graph) | {o.name for o in graph.output}
  consumers: dict[str, list[tuple[Any, int]]] = {}
  for node in graph.node:
    for i, name in enumerate(node.input):
      consumers.setdefault(name, []).append((node, i))
  counts = {'expands_bypassed': 0, 'constants_cut': 0, 'subs_to_adds': 0,
            'maxima_to_relus': 0, 'nodes_dropped': 0, 'initializers_dropped': 0}

  def broadcasting_only(name: str, ops: frozenset[str] = BROADCASTING) -> bool:
    users = consumers.get(name, [])
    return bool(users) and name not in pinned and all(node.op_type in ops for node, _ in users)

  def other_shapes(node: Any, index: int) -> list[Shape] | None:
    others = [shapes.get(name) for j, name in enumerate(node.input) if j != index and name]
    return None if any(s is None for s in others) else others

  def same_result(user: Any, index: int, source: Shape, expanded: Shape) -> bool:
    """Whether ``user`` reading ``source`` instead of ``expanded`` at ``index`` computes the
    same: for MatMul the batch dimensions broadcast, the matrix dimensions must be equal."""
    others = other_shapes(user, index)
    if others is None:
      return False
    if user.op_type != 'MatMul':
      return _broadcast(others + [source]) == expanded
    return (len(source) >= 2 and len(others[0]) >= 2 and source[-2:] == expanded[-2:]
            and _broadcast([others[0][:-2], source[:-2]]) == expanded[:-2])

  for node in list(graph.node):
    if (node.op_type != 'Expand'
        or not broadcasting_only(node.output[0], BROADCASTING | {'MatMul'})):
      continue
    source, expanded = shapes.get(node.input[0]), shapes.get(node.output[0])
    if source is None or expanded is None:
      continue
    users = consumers[node.output[0]]
    if all(same_result(user, i, source, expanded) for user, i in users):
      source = node.input[0]
      for user, i in users:
        user.input[i] = source
        consumers.setdefault(source, []).append((user, i))
      consumers[node.output[0]] = []
      counts['expands_bypassed'] += 1

  for init in graph.initializer:
    if not broadcasting_only(init.name):
      continue
    value = numpy_helper.to_array(init)
    cut = value
    for axis in range(value.ndim):
      size, from_right = value.shape[axis], value.ndim - axis
      if size == 1:
        continue
      covered = True
      for user, i in consumers[init.name]:
        others = other_shapes(user, i)
        if others is None or not any(len(s) >= from_right and s[-from_right] == size
                                     for s in others):
          covered = False
          break
      first = np.take(cut, [0], axis=axis)
      if covered and np.array_equal(cut, np.broadcast_to(first, cut.shape)):
        cut = first
    if cut.shape != value.shape:
      init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(cut), init.name))
      shapes[init.name] = list(cut.shape)
      counts['constants_cut'] += 1

  initializers = {init.name: init for init in graph.initializer}
  for node in graph.node:
    name = node.input[1] if node.op_type == 'Sub' else None
    if name not in initializers or name in pinned:
      continue
    value = numpy_helper.to_array(initializers[name])
    if value.dtype.kind != 'f':
      continue
    negated = numpy_helper.from_array(-value, f'{name}_negated')
    if negated.name not in initializers:
      graph.initializer.append(negated)
      initializers[negated.name] = negated
    node.op_type, node.input[1] = 'Add', negated.name
    counts['subs_to_adds'] += 1

  for node in graph.node:
    if node.op_type != 'Max' or len(node.input) != 2:
      continue
    for data, zero in ((0, 1), (1, 0)):
      name = node.input[zero]
      if (name in initializers and shapes.get(node.input[data]) is not None
          and _broadcast([shapes[node.input[data]], shapes.get(name, [None])])
          == shapes[node.input[data]]
          and numpy_helper.to_array(initializers[name]).dtype.kind == 'f'
          and not numpy_helper.to_array(initializers[name]).any()):
        node.op_type = 'Relu'
        node.input[:] = [node.input[data]]
        counts['maxima_to_relus'] += 1
        break

  live, needed = [], set(pinned)
  for node in reversed(graph.node):  # nodes are in topological order
    if any(name in needed for name in node.output):
      live.append(node)
      needed.update(node.input)
  counts['nodes_dropped'] = len(graph.node) - len(live)
  del graph.node[:]
  graph.node.extend(reversed(live))

  read = {name for node in graph.node for name in node.input} | pinned
  kept = [init for init in graph.initializer if init.name in read]
  counts['initializers_dropped'] = len(graph.initializer) - len(kept)
  del graph.initializer[:]
  graph.initializer.extend(kept)
  return counts
