"""A deterministic, seeded, in-memory network of consensus cores (see consensus/README.md).

Not used by the node: only tests and benchmarks import it. It may use a seeded
``random.Random``; the core (consensus/*.py outside sim/) must not.
"""

from consensus.sim.byzantine import Behaviour
from consensus.sim.checker import Checker, Violation
from consensus.sim.scenario import Scenario, SimResult, run_scenario

__all__ = ["Behaviour", "Checker", "Scenario", "SimResult", "Violation", "run_scenario"]
