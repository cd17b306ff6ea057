"""Placement report: which EP ran each node of a graph and how much INT8 work the accelerator took.

Counts come from the session itself (onnxruntime's graph-assignment record, OpenVINO's
execution devices), never from what was asked for: an earlier project reported NPU speed-ups
while every node ran on the CPU provider.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from amanuensis.devices import CPU_EP, SessionPlan
from amanuensis.quantize import float_source
from amanuensis.quantize.analysis import compute_nodes, int8_node_names
from amanuensis.quantize.targets import source_node_name
from amanuensis.sessions import GraphSession, NodeAssignment, SessionSettings, nodes_per_ep, open_session


@dataclass(frozen=True)
class GraphPlacement:
    graph: str  # the GraphKind value ("encoder" | "decoder")
    requested: str  # the plan, as chosen before the session existed
    nodes_per_ep: dict[str, int]  # EP (or OpenVINO device) → nodes it took
    macs_per_ep: dict[str, int]  # EP → MatMul/Conv/Gemm multiply-accumulates it took, per run
    int8_macs: int  # MACs of compute nodes with INT8 (QDQ) inputs
    int8_macs_on_accelerator: int  # of those, taken by an EP other than the CPU EP
    fallback_ops: dict[str, int]  # op type → nodes left on the CPU EP although an accelerator was chosen

    @property
    def accelerator_int8_share(self) -> float:
        return self.int8_macs_on_accelerator / self.int8_macs if self.int8_macs else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "accelerator_int8_share": self.accelerator_int8_share}

    def summary(self) -> str:
        eps = ", ".join(f"{ep} {count}" for ep, count in self.nodes_per_ep.items())
        line = f"{self.graph}: {eps} nodes"
        if self.int8_macs:
            line += f"; INT8 MACs on an accelerator: {self.accelerator_int8_share:.1%}"
        if self.fallback_ops:
            ops = ", ".join(f"{op}×{n}" for op, n in self.fallback_ops.items())
            line += f"; fell back to CPU (not taken by the accelerator): {ops}"
        return line


def _is_accelerator(ep: str) -> bool:
    return ep not in (CPU_EP, "CPU", "OpenVINO:CPU")


def graph_placement(graph: str, model_path: Path, session: GraphSession) -> GraphPlacement:
    assignments: list[NodeAssignment] = session.assignments()
    ep_of = {source_node_name(a.name): a.ep for a in assignments}
    used = {a.ep for a in assignments}
    whole_graph_ep = used.pop() if len(used) == 1 else "?"  # OpenVINO renames nodes but places them all at once
    # MACs from the float export (same node names): onnx cannot infer shapes through 16-bit contrib Q/DQ.
    compute = compute_nodes(onnx.load(str(float_source(model_path))))
    int8 = int8_node_names(onnx.load(str(model_path)))
    macs_per_ep: Counter[str] = Counter()
    for node in compute:
        macs_per_ep[ep_of.get(node.name, whole_graph_ep)] += node.macs
    int8_macs = sum(n.macs for n in compute if n.name in int8)
    on_accelerator = sum(
        n.macs for n in compute if n.name in int8 and _is_accelerator(ep_of.get(n.name, whole_graph_ep))
    )
    accelerated = session.plan.ep != CPU_EP and _is_accelerator(session.plan.ep)
    fallback = Counter(a.op_type for a in assignments if accelerated and a.ep == CPU_EP)
    return GraphPlacement(
        graph=graph,
        requested=session.plan.describe(),
        nodes_per_ep=nodes_per_ep(assignments),
        macs_per_ep=dict(macs_per_ep.most_common()),
        int8_macs=int8_macs,
        int8_macs_on_accelerator=on_accelerator,
        fallback_ops=dict(fallback.most_common()),
    )


@dataclass(frozen=True)
class Agreement:
    """An accelerator run of a graph against the CPU EP run of the same graph and inputs."""

    placement: GraphPlacement  # where the accelerator session put the nodes
    sqnr_db: dict[str, float]  # per output: 10·log10(‖cpu‖² / ‖accelerator − cpu‖²)
    max_abs_error: dict[str, float]  # per output


def agreement(graph: str, path: Path, session: GraphSession, feed: dict, output_names: list[str]) -> Agreement:
    cpu = open_session(path, SessionPlan("onnxruntime", CPU_EP, "cpu", "cpu"), SessionSettings())
    expected = cpu.run(output_names, feed)
    actual = session.run(output_names, feed)
    sqnr, max_abs = {}, {}
    for name, want, got in zip(output_names, expected, actual, strict=True):
        noise = float(np.sum((got.astype(np.float64) - want) ** 2))
        sqnr[name] = float(10 * np.log10(np.sum(want.astype(np.float64) ** 2) / noise)) if noise else float("inf")
        max_abs[name] = float(np.max(np.abs(got - want)))
    return Agreement(graph_placement(graph, path, session), sqnr, max_abs)
