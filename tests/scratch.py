"""What the tests train: pvt_v2_b0 from scratch (no download, no bundled weights), one pass over the
tiny dataset's source images per epoch, solution A's learning rates. These were TrainConfig's defaults
before the defaults became the cpu_demo preset; the tests were written against them. No source_only warm
start (cpu_demo's uda has one since issue 27; tests/test_warm_start.py tests it)."""

SCRATCH = dict(method="uda_geo", encoder="pvt_v2_b0", pretrained=False, steps_per_epoch=None, lr_encoder=1e-4,
               lr_decoder=1e-3, src_hfov_deg=90.0, warm_start=0.0)
