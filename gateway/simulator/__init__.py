"""Local Voice Live-compatible server: the gateway's default backend, the test counterpart, the demo."""

from gateway.simulator.server import (
    RunningSimulator,
    SimSession,
    SimulatorSettings,
    SimulatorState,
    ToolCall,
    create_app,
    register_cli,
    start_simulator,
)

__all__ = [
    "RunningSimulator",
    "SimSession",
    "SimulatorSettings",
    "SimulatorState",
    "ToolCall",
    "create_app",
    "register_cli",
    "start_simulator",
]
