"""Face verification and one-shot recognition.

- :mod:`convjax.face.metrics`: ROC, AUC, EER, TAR@FAR, ROC plot.
- :mod:`convjax.face.thresholds`: thresholds chosen on validation pairs, LFW 10-fold.
- :mod:`convjax.face.diagnostics`: collapse diagnostics and the collapse warning.
- :mod:`convjax.face.gallery`: enrolment and top-k identification (1:K), open-set.
- :mod:`convjax.face.sampler`: identity-balanced P x K batches and verification pairs.
- :mod:`convjax.face.evaluation`: one-shot identification and verification report.
- :mod:`convjax.face.experiment`: train / evaluate / enroll / identify / verify as
  functions on a config and workdir (on top of ``convjax.train``; nothing below
  imports it).
"""
