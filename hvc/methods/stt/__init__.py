"""STT: Spatial-then-Temporal self-supervised learning for video correspondence (Li & Liu, CVPR 2023).

spec.py: the registry entry; params.py: the ``stt`` section, the propagation preset and
display name; model.py: the student/teacher ResNet-18 layouts and the step-1 MoCo encoder;
loss.py: local and global correlations, pyramid reconstruction, entropy selection,
correlation distillation; method.py: the harness's method interface (``METHOD``: spatial
phase, then temporal phase); inference.py: its own label propagation.
"""
