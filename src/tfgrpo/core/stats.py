"""`GRPOStats`: counters and advantage figures of a library, with the spec's summary block."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GRPOStats:
    total_rollouts: int = 0
    total_stored: int = 0
    total_pruned: int = 0
    current_library_size: int = 0
    avg_advantage: float = 0.0
    max_advantage: float = 0.0
    min_advantage: float = 0.0
    total_loaded: int = 0
    """Experiences that came from a file rather than from rollouts (counted for retention)."""

    def storage_efficiency(self) -> float:
        """stored / total rollouts; 0.0 before any rollout."""
        return self.total_stored / self.total_rollouts if self.total_rollouts else 0.0

    def retention_rate(self) -> float:
        """current library / everything that entered it; 0.0 when nothing ever did."""
        entered = self.total_stored + self.total_loaded
        return self.current_library_size / entered if entered else 0.0

    def summary(self) -> str:
        efficiency = 100.0 * self.storage_efficiency()
        return "\n".join(
            [
                "GRPO Stats:",
                f"Total rollouts: {self.total_rollouts}",
                f"Stored: {self.total_stored} ({efficiency:.1f}% of rollouts)",
                f"Pruned: {self.total_pruned}",
                f"Current library: {self.current_library_size} experiences",
                f"Advantage: avg={self.avg_advantage:.3f}, max={self.max_advantage:.3f}, min={self.min_advantage:.3f}",
                f"Storage efficiency: {efficiency:.1f}%",
                f"Retention rate: {100.0 * self.retention_rate():.1f}%",
            ]
        )

    def to_dict(self) -> dict:
        return {
            "total_rollouts": self.total_rollouts,
            "total_stored": self.total_stored,
            "total_pruned": self.total_pruned,
            "total_loaded": self.total_loaded,
            "current_library_size": self.current_library_size,
            "avg_advantage": self.avg_advantage,
            "max_advantage": self.max_advantage,
            "min_advantage": self.min_advantage,
            "storage_efficiency": self.storage_efficiency(),
            "retention_rate": self.retention_rate(),
        }
