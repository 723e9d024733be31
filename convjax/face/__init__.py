"""Face verification and one-shot recognition: array math, no training.

The one file format is the gallery's ``.npz`` (:meth:`Gallery.save` / ``load``, no
pickle); where it goes, and every other file, is the driver's business.

- :mod:`convjax.face.metrics`: ROC, AUC, EER, TAR@FAR, ROC figure.
- :mod:`convjax.face.thresholds`: thresholds chosen on validation pairs, LFW 10-fold.
- :mod:`convjax.face.diagnostics`: collapse diagnostics and the collapse warning.
- :mod:`convjax.face.gallery`: enrolment and top-k identification (1:K), open-set.
- :mod:`convjax.face.evaluation`: one-shot identification and verification report.

Elsewhere: pairwise distances and pair masks in :mod:`convjax.ops.distances`; the
P x K and pair samplers in :mod:`convjax.data.samplers`; train / evaluate / enroll /
identify / verify on a workdir in :mod:`convjax.runs.faces`.
"""
