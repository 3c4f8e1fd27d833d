"""HVC: hybrid static-dynamic visual correspondence (Wang et al., paper §3)."""

from hvc.methods.hvc.method import HVCMethod as METHOD

__all__ = ["METHOD"]
