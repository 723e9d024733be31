"""Object detection: YOLO targets and decoding, anchors, mAP evaluation, sliding windows,
drawing. Box arithmetic and NMS live in :mod:`convjax.ops.boxes` and :mod:`convjax.ops.nms`.
"""
