"""Inference sessions for one graph on the backend and device a ``SessionPlan`` chose.

Both backends are wrapped to the one call the runtime makes, ``run(output_names, feed)``, and
both report where the graph's nodes really ran (``placement``), from the library's own account.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from amanuensis.devices import CPU_EP, DeviceUnavailable, SessionPlan

# Without this entry onnxruntime does not keep its record of which EP took which node.
RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
ALLOW_SPINNING = "session.intra_op.allow_spinning"
# On x86 without VNNI: onnxruntime stores constant int8 weights as uint8 for its u8×u8 kernels
EXACT_U8S8 = "session.x64quantprecision"
OPENVINO_NON_COMPUTE = ("Parameter", "Result", "Constant")  # graph plumbing, not work placed on a device
# EPs that compile a graph for their device and can save the result as an EP context model
# (onnxruntime's EPContext node): the next session loads that instead of compiling again.
OPENVINO_CACHE_DIR = "openvino-cache"  # beside the graphs: OpenVINO's own compiled-model cache (CACHE_DIR)
CONTEXT_EPS = ("QNNExecutionProvider", "OpenVINOExecutionProvider", "VitisAIExecutionProvider")
EP_CONTEXT_ENABLE = "ep.context_enable"
EP_CONTEXT_FILE = "ep.context_file_path"
EP_CONTEXT_EMBED = "ep.context_embed_mode"  # 1: the compiled binary inside the saved model, one file to replace


@dataclass(frozen=True)
class SessionSettings:
    """Per-session knobs that do not depend on the device."""

    threads: int = 0  # intra-op threads (0 = the library's default: one per physical core)
    allow_fallback: bool = True  # False: nodes the accelerator cannot take are an error, not CPU work
    f32_precision: bool = True  # OpenVINO: pin f32 (its CPU default is bf16, which changes numerics)
    # One CPU arena shared by every session of the process (see shared_cpu_arena). Without an arena
    # each encoder run maps and faults in its ~200 MB of activations anew (+80% time, tiny.en).
    memory_arena: bool = True
    # Idle worker threads wait instead of spinning. Each session owns a thread pool, and after a run
    # its workers spin on cores the next session (encoder, then decoder, then encoder) needs: with
    # spinning, tools/bench.py measured tiny.en INT8 at RTF 0.051-0.055, without it 0.046 (2 threads).
    spin_idle_threads: bool = False
    log_severity: int = 4  # onnxruntime session log level (4 = fatal only; placement is reported by us)
    # Keep what an NPU compiler made (onnxruntime's EP context model; OpenVINO's CACHE_DIR) beside the
    # graph, so only the first session on a machine pays for compiling. Off where a caller needs the
    # node-by-node placement of a fresh compile (a context model shows one EPContext node per partition).
    compiled_cache: bool = True
    # onnxruntime's CPU EP multiplies u8 activations by constant s8 weights in its exact u8×u8 kernels
    # where its u8×s8 one saturates (x86 without VNNI; amanuensis.quantize.kernels): the static
    # flavours keep int8 weights for their NPUs, and this makes the CPU compute what the NPU does.
    exact_integer_products: bool = False


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


ARENA_EXTEND_SAME_AS_REQUESTED = 1  # OrtArenaCfg strategy: grow by what is asked, not the next power of two
_arena_lock = threading.Lock()
_arena_registered = False


def shared_cpu_arena() -> None:
    """Register one CPU arena in onnxruntime's environment, once per process.

    Sessions that opt in (``session.use_env_allocators``) draw from it, so the decoders reuse the
    blocks the encoder freed instead of each growing an arena of its own, and blocks are sized as
    requested: peak RSS is about 80 MB lower than per-session arenas (tiny.en), at the same speed.
    """
    global _arena_registered
    with _arena_lock:
        if _arena_registered:
            return
        config = ort.OrtArenaCfg(0, ARENA_EXTEND_SAME_AS_REQUESTED, -1, -1)  # no cap; defaults otherwise
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, config)
        _arena_registered = True


class OnnxRuntimeSession:
    """An ``InferenceSession`` whose EPs come from the plan (plugin EP devices or the CPU EP)."""

    def __init__(self, path: Path, plan: SessionPlan, settings: SessionSettings) -> None:
        self.plan = plan
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(RECORD_ASSIGNMENT, "1")
        options.add_session_config_entry(ALLOW_SPINNING, "1" if settings.spin_idle_threads else "0")
        options.log_severity_level = settings.log_severity
        if settings.exact_integer_products:
            options.add_session_config_entry(EXACT_U8S8, "1")
        options.enable_cpu_mem_arena = settings.memory_arena
        if settings.memory_arena:
            shared_cpu_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
            options.enable_mem_pattern = False  # a pattern preallocates each session's peak for itself
        if plan.ep == CPU_EP:
            self.session = ort.InferenceSession(str(path), options, providers=[CPU_EP])
            return
        if not settings.allow_fallback:
            options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
        options.add_provider_for_devices(plan.ep_devices, plan.ep_options)
        self.compiled_from_cache = False  # True when the session loaded a saved EP context model
        if settings.compiled_cache and plan.ep in CONTEXT_EPS:
            self.session = self._open_with_context_cache(path, plan, options)
            return
        self.session = _open(path, plan, options)

    def _open_with_context_cache(
        self, path: Path, plan: SessionPlan, options: ort.SessionOptions
    ) -> ort.InferenceSession:
        """Load the saved EP context model if there is a current one, else compile ``path`` and save
        it (written under a temporary name, then renamed: a concurrent or interrupted run never
        leaves a half-written context behind)."""
        cached = context_cache_path(path, plan)
        if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
            try:
                session = _open(cached, plan, options)
                self.compiled_from_cache = True
                return session
            except DeviceUnavailable:
                pass  # unreadable or from another EP version: compile again and replace it
        staging = cached.with_name(f".{os.getpid()}.{threading.get_ident()}.{cached.name}")
        options.add_session_config_entry(EP_CONTEXT_ENABLE, "1")
        options.add_session_config_entry(EP_CONTEXT_FILE, str(staging))
        options.add_session_config_entry(EP_CONTEXT_EMBED, "1")
        try:
            session = _open(path, plan, options)
            if staging.exists():
                os.replace(staging, cached)
        finally:
            staging.unlink(missing_ok=True)
        return session

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(output_names, feed)

    def assignments(self) -> list[NodeAssignment]:
        return [
            NodeAssignment(node.name, node.op_type, subgraph.ep_name)
            for subgraph in self.session.get_provider_graph_assignment_info()
            for node in subgraph.get_nodes()
        ]


def _open(path: Path, plan: SessionPlan, options: ort.SessionOptions) -> ort.InferenceSession:
    try:
        with _native_stdout_to_stderr(plan.ep != CPU_EP):
            return ort.InferenceSession(str(path), options)
    except Exception as error:  # onnxruntime raises its own Fail/EPFail types
        raise DeviceUnavailable(f"{plan.ep} could not take {path.name}: {first_line(error)}") from error


_STDOUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _native_stdout_to_stderr(active: bool) -> Iterator[None]:
    """Send what native code prints to stdout while a session is created to stderr instead.

    The QNN EP's libraries print a banner on the process's stdout, where it would land inside a
    transcript or ``inspect --json``. Only the file descriptor is redirected, for the duration.
    """
    if not active:
        yield
        return
    with _STDOUT_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def context_cache_path(path: Path, plan: SessionPlan) -> Path:
    """Where the compiled form of ``path`` for this EP and these options is kept: beside the graph,
    keyed by the EP, its options and the onnxruntime version (a compiled binary fits only those)."""
    key = json.dumps([plan.ep, sorted(plan.ep_options.items()), ort.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return path.with_name(f"{path.stem}.{plan.ep.removesuffix('ExecutionProvider').lower()}-{digest}_ctx.onnx")


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
        if settings.compiled_cache and plan.ep != "CPU":  # compiled blobs for NPU/GPU; the CPU compiles quickly
            config["CACHE_DIR"] = str(path.parent / OPENVINO_CACHE_DIR)
        core = openvino.Core()
        self._model = core.read_model(str(path))
        try:
            self.compiled = core.compile_model(self._model, plan.ep, config)
        except Exception as error:  # OpenVINO raises RuntimeError subclasses with long traces
            raise DeviceUnavailable(f"OpenVINO {plan.ep} could not compile {path.name}: {first_line(error)}") from error
        self._request = self.compiled.create_infer_request()

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feed)
        # A port can carry several names (the graph output's and its producer's tensor name), and
        # any_name may be either: look each output up by all of them.
        by_name = {name: value for port, value in results.items() for name in port.names}
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


def first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def open_session(path: Path, plan: SessionPlan, settings: SessionSettings) -> GraphSession:
    if plan.backend == "openvino":
        return OpenVINOSession(path, plan, settings)
    return OnnxRuntimeSession(path, plan, settings)


def nodes_per_ep(assignments: list[NodeAssignment]) -> dict[str, int]:
    return dict(Counter(a.ep for a in assignments).most_common())
