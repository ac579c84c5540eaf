"""Margin heads (classifier + loss) for face recognition training, registered by name.

Every head is a normalised-weight classifier: features x (B, D) and class weights W (C*K, D) are
L2-normalised, cos theta = W.x, with K sub-centers per class max-pooled to one score per class.
A head only says how the target class's cosine is changed (``margin``) and what extra loss term it
adds (``extra_loss``); this base class does the rest, including Partial FC (``sample_rate`` < 1:
each step scores all classes present in the batch plus a random subset of the others).
"""

from models.heads import adaface, magface, margin, subcenter_arcface  # noqa: F401  (registration)
from models.heads.base import HEADS, MarginHead, build_head, train_epoch  # noqa: F401
