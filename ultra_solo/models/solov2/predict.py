"""SOLOv2 predictor: Ultralytics' segmentation predictor with SOLOv2 decoding."""

from __future__ import annotations

import torch
from ultralytics.engine.results import Results
from ultralytics.models.yolo.segment import SegmentationPredictor
from ultralytics.utils import ops

from .decode import detections
from .network import decode_settings, decoded_by_solo
from .resample import mask_boxes, upsample_probs, upsampled_masks_and_boxes


class SOLOPredictor(SegmentationPredictor):
    """Predictor for SOLO models returning `Results` with masks and boxes; `retina_masks` gives original-size masks.

    Detections score at least max(conf, filter_thr); `classes` and `agnostic_nms` act as in YOLO's NMS (classes are
    filtered before Matrix NMS, which then runs across classes with `agnostic_nms`).

    Examples:
        >>> predictor = SOLOPredictor(overrides=dict(model="best.pt", source="image.jpg"))
        >>> results = predictor()
    """

    def setup_model(self, model, verbose: bool = True) -> None:
        """Load the model (Ultralytics' predictor makes its own copy), mark it as read by SOLO's decoding
        (`network.decoded_by_solo`) and read the SOLO inference constants from it."""
        super().setup_model(model, verbose)
        decoded_by_solo(self.model)
        self.decode = decode_settings(self.model)

    def postprocess(self, preds, img: torch.Tensor, orig_imgs) -> list[Results]:
        """Decode each image of the batch into a `Results` in original-image pixels."""
        if not isinstance(orig_imgs, list):  # input images are a torch.Tensor, not a list
            orig_imgs = ops.convert_torch2numpy_batch(orig_imgs)[..., ::-1]
        found = detections(
            preds,
            self.decode,
            self.args.conf,
            self.args.max_det,
            min_score=max(self.args.conf, self.decode.filter_thr),
            classes=self.args.classes,
            agnostic=bool(self.args.agnostic_nms),
        )
        return [self.make_result(d, img, orig_img, path) for d, orig_img, path in zip(found, orig_imgs, self.batch[0])]

    def make_result(self, found: tuple, img: torch.Tensor, orig_img, img_path: str) -> Results:
        """Build one `Results`: masks at the letterboxed input size, or at the original size with `retina_masks`.

        Retina masks are upsampled to the input size before the letterbox padding is cut, so the cut is exact. Masks at
        the input size are upsampled each over its own window where the scale allows it (`upsampled_masks_and_boxes`),
        with the masks and boxes of upsampling everything.
        """
        probs, conf, cls = found
        thr = self.decode.mask_thr
        if self.args.retina_masks:
            masks = ops.scale_masks(upsample_probs(probs, img.shape[2:])[None], orig_img.shape[:2])[0] > thr
            boxes = mask_boxes(masks)
        else:
            masks, boxes = upsampled_masks_and_boxes(probs, img.shape[2:], thr)  # (n, H, W), (n, 4)
            boxes = ops.scale_boxes(img.shape[2:], boxes, orig_img.shape)
        boxes = torch.cat((boxes, conf[:, None], cls[:, None].float()), 1)  # (n, 6)
        return Results(orig_img, path=img_path, names=self.model.names, boxes=boxes, masks=masks if len(conf) else None)
