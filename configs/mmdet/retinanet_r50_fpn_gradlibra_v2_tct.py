# RetinaNet R50-FPN with Grad-Libra v2 (wsi_pipeline's loss through its mmdet adapter), for labs with
# a full mmcv (compiled ops) and mmdet 3.3. Train with:   mim train mmdet configs/mmdet/<this file>
#   or   python tools/train.py configs/mmdet/<this file>   from an mmdet checkout.
# Data: a COCO patch dataset as `wsi synth dataset` / the real-crop exporter write it (images/ +
# annotations.json, 10 classes of configs/taxonomy.yaml); set data_root below.
# Grad-Libra v2 is OUR reconstruction of Liu et al. (MICCAI 2022), not the authors' code
# (docs/losses.md). Swap loss_cls's type for WsiGradLibraLoss (v1), WsiEqualizedFocalLoss,
# WsiEQLv2Loss, WsiFocalLoss or WsiBCELoss to compare.
_base_ = "mmdet::retinanet/retinanet_r50_fpn_1x_coco.py"

custom_imports = dict(imports=["wsi_pipeline.models.mmdet_adapter"], allow_failed_imports=False)

classes = ("NILM", "INFL", "ASC-US", "LSIL", "ASC-H", "AGC", "HSIL", "SCC", "TRICH", "CAND")  # configs/taxonomy.yaml
num_classes = len(classes)

model = dict(
    bbox_head=dict(
        num_classes=num_classes,
        loss_cls=dict(
            type="WsiGradLibraV2Loss",
            num_classes=num_classes,
            use_sigmoid=True,
            loss_weight=1.0,
            gamma=2.0,
            alpha=0.25,
            kappa=1.0,
            lam=4.0,
            mu=0.8,
            mu_scale=12.0,
        ),
    ),
)

data_root = "data/tct_patches/"
metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        _delete_=True,
        type="ClassBalancedDataset",  # repeat-factor sampling (RFS)
        oversample_thr=0.1,
        dataset=dict(
            type="CocoDataset",
            data_root=data_root,
            metainfo=metainfo,
            ann_file="train/annotations.json",
            data_prefix=dict(img="train/images/"),
            filter_cfg=dict(filter_empty_gt=False),
            pipeline={{_base_.train_pipeline}},  # mmengine substitutes the base config's pipeline
        ),
    ),
)
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file="val/annotations.json",
                 data_prefix=dict(img="val/images/")),
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "val/annotations.json")
test_evaluator = val_evaluator
