"""LIIR: locality-aware inter-and intra-video reconstruction (Li et al., CVPR 2022).

spec.py: the registry entry; params.py: the ``liir:`` section; model.py: stride-4 MAST
ResNet-18 with the learnable position encoding and position shifting; colour.py: Lab
colour-channel dropout; loss.py: windowed affinities, reconstruction, memory-bank
negatives, compactness prior; config.py: the numbers of both training phases and of
inference; method.py: the harness's method interface (``METHOD``); inference.py: its own
label propagation.
"""
