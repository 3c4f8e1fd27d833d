"""HVC: hybrid static-dynamic visual correspondence (Pei et al., paper §3).

spec.py: the registry entry; params.py: the ``hvc:`` section; model.py: backbone, heads and
the EMA target encoder; loss.py: the hybrid loss (Eqs. 6-10); views.py: the two views of an
image; method.py: the harness's method interface (``METHOD``).
"""
