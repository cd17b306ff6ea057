"""Inference sessions for one graph on the backend and device a ``SessionPlan`` chose.

Both backends are wrapped to the one call the runtime makes, ``run(output_names, feed)``, and
both report where the graph's nodes really ran (``placement``), from the library's own account.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from amanuensis.devices import CPU_EP, DeviceUnavailable, SessionPlan

# Without this entry onnxruntime does not keep its record of which EP took which node.
RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
OPENVINO_NON_COMPUTE = ("Parameter", "Result", "Constant")  # graph plumbing, not work placed on a device


@dataclass(frozen=True)
class SessionSettings:
    """Per-session knobs that do not depend on the device."""

    threads: int = 0  # intra-op threads (0 = the library's default: one per physical core)
    allow_fallback: bool = True  # False: nodes the accelerator cannot take are an error, not CPU work
    f32_precision: bool = True  # OpenVINO: pin f32 (its CPU default is bf16, which changes numerics)
    memory_arena: bool = False  # onnxruntime's CPU arena keeps the encoder's peak activations (~110 MB, tiny.en)
    log_severity: int = 4  # onnxruntime session log level (4 = fatal only; placement is reported by us)


@dataclass(frozen=True)
class NodeAssignment:
    """Which EP (or OpenVINO device) ran one node of the graph as given."""

    name: str
    op_type: str
    ep: str


class GraphSession(Protocol):
    plan: SessionPlan

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def assignments(self) -> list[NodeAssignment]: ...


class OnnxRuntimeSession:
    """An ``InferenceSession`` whose EPs come from the plan (plugin EP devices or the CPU EP)."""

    def __init__(self, path: Path, plan: SessionPlan, settings: SessionSettings) -> None:
        self.plan = plan
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(RECORD_ASSIGNMENT, "1")
        options.log_severity_level = settings.log_severity
        options.enable_cpu_mem_arena = settings.memory_arena
        if plan.ep == CPU_EP:
            self.session = ort.InferenceSession(str(path), options, providers=[CPU_EP])
            return
        if not settings.allow_fallback:
            options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        options.add_provider_for_devices(plan.ep_devices, plan.ep_options)
        try:
            self.session = ort.InferenceSession(str(path), options)
        except Exception as error:  # onnxruntime raises its own Fail/EPFail types
            raise DeviceUnavailable(f"{plan.ep} could not take {path.name}: {_first_line(error)}") from error

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(output_names, feed)

    def assignments(self) -> list[NodeAssignment]:
        return [
            NodeAssignment(node.name, node.op_type, subgraph.ep_name)
            for subgraph in self.session.get_provider_graph_assignment_info()
            for node in subgraph.get_nodes()
        ]


class OpenVINOSession:
    """The same ONNX file compiled by OpenVINO for a device string such as ``NPU`` or ``AUTO:NPU,CPU``."""

    def __init__(self, path: Path, plan: SessionPlan, settings: SessionSettings) -> None:
        import openvino

        self.plan = plan
        config: dict[str, str] = {}
        if settings.f32_precision:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if settings.threads and plan.ep == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(settings.threads)
        core = openvino.Core()
        self._model = core.read_model(str(path))
        try:
            self.compiled = core.compile_model(self._model, plan.ep, config)
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with long traces
            raise DeviceUnavailable(
                f"OpenVINO {plan.ep} could not compile {path.name}: {_first_line(error)}"
            ) from error
        self._request = self.compiled.create_infer_request()

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feed)
        by_name = {port.any_name: value for port, value in results.items()}
        return [np.array(by_name[name]) for name in output_names]

    def execution_devices(self) -> list[str]:
        """Devices OpenVINO really compiled for (AUTO resolves to one of them)."""
        devices = self.compiled.get_property("EXECUTION_DEVICES")
        names = [devices] if isinstance(devices, str) else list(devices)
        return [name.strip("() ") for name in names]

    def assignments(self) -> list[NodeAssignment]:
        """OpenVINO compiles the whole graph for one device (or fails), so every node ran there."""
        device = "OpenVINO:" + "+".join(self.execution_devices())
        return [
            NodeAssignment(op.get_friendly_name(), op.get_type_name(), device)
            for op in self._model.get_ops()
            if op.get_type_name() not in OPENVINO_NON_COMPUTE
        ]


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def open_session(path: Path, plan: SessionPlan, settings: SessionSettings) -> GraphSession:
    if plan.backend == "openvino":
        return OpenVINOSession(path, plan, settings)
    return OnnxRuntimeSession(path, plan, settings)


def nodes_per_ep(assignments: list[NodeAssignment]) -> dict[str, int]:
    return dict(Counter(a.ep for a in assignments).most_common())
