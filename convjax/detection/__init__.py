"""Object detection math: YOLO targets and decoding, anchors, mAP, sliding windows, drawing.

Box arithmetic and NMS live in :mod:`convjax.ops.boxes` and :mod:`convjax.ops.nms`;
evaluating a trained workdir and running it on image files in :mod:`convjax.runs.detect`.
"""
