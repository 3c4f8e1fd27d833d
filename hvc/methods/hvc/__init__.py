"""HVC: hybrid static-dynamic visual correspondence (Wang et al., paper §3)."""
