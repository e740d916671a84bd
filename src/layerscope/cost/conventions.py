"""FLOP conventions: what one unit of "cost" means, looked up by name.

A multiply–accumulate (MAC) is one multiply and one add. ``"flops"`` counts it as 2 (the convention of
``torch.utils.flop_counter``, of PaLM's MFU accounting and of most papers since); ``"macs"`` counts it as
1 (the convention behind "ResNet-18 = 1.82 G" and what fvcore/thop report, often mislabelled as FLOPs).
Operations that are not MACs — a bias add, an activation, a normalisation — count 1 per arithmetic
operation in both conventions (the ptflops/thop habit), and can be left out with ``include_bias`` /
``include_elementwise``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._registry import Registry


@dataclass(frozen=True)
class FlopConvention:
    name: str
    unit: str
    per_mac: int  # units counted for one multiply–accumulate


FLOP_CONVENTIONS: Registry[FlopConvention] = Registry("FLOP convention")
FLOP_CONVENTIONS.register("flops")(FlopConvention("flops", "FLOPs", per_mac=2))
FLOP_CONVENTIONS.register("macs")(FlopConvention("macs", "MACs", per_mac=1))


@dataclass(frozen=True)
class CountingRules:
    """Everything that decides a FLOP number; formulas are closures over one of these."""

    convention: FlopConvention
    include_bias: bool = True
    include_elementwise: bool = True
    causal_halving: bool = False

    @classmethod
    def make(cls, convention: str = "flops", *, include_bias: bool = True, include_elementwise: bool = True,
             causal_halving: bool = False) -> CountingRules:
        return cls(FLOP_CONVENTIONS.get(convention), bool(include_bias), bool(include_elementwise),
                   bool(causal_halving))

    def total(self, matmul_flops: int, bias: int = 0, elementwise: int = 0) -> int:
        """Combine the parts of one op. ``matmul_flops`` is in torch's unit (2 per MAC), always even."""
        units = matmul_flops * self.convention.per_mac // 2
        if self.include_bias:
            units += bias
        if self.include_elementwise:
            units += elementwise
        return int(units)
