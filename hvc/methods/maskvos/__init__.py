"""Mask-VOS: unified mask embedding and correspondence learning (Li et al., CVPR 2023).

spec.py: the registry entry; params.py: the ``maskvos`` parameter section, the plain
propagation preset and the mask-embedded inference settings; model.py: encoder E, value
encoder V, decoder D, soft aggregation; loss.py: Eqs. 5-16; clustering.py: per-video
k-means pseudo masks (Eq. 4); method.py: the harness's method interface (``METHOD``);
inference.py: the mask-embedded inference.
"""
