"""The paper's search spaces (ALGORITHM.md, "Search space" and "Larger spaces"), as data."""

from mixnas_tf.spaces.spec import SearchSpace

# ResNet20 on CIFAR: 3x3 stem + 9 basic blocks, widths fixed by layer; 2 downsamplings
# among the 9 blocks: C(9,2) = 36 configurations, numbered 1..36 like the reference.
RESNET20 = SearchSpace(
    name="resnet20", block="basic",
    widths=(16, 16, 16, 16, 32, 32, 32, 64, 64, 64),
    candidates=tuple(range(1, 10)), num_downsamples=2, default=(4, 3, 3),
    stem_in_stages=True, reference_base=1, stem="cifar")

# ResNet18 on CIFAR: 3x3 stem (64) + 8 basic blocks 64,64,128,128,256,256,512,512; 3
# downsamplings among the 8 blocks: C(8,3) = 56 compositions [n1,n2,n3,n4] of 9 (stem
# counted), numbered 0..55 like the reference's lookup table; standard [3,2,2,2] = 41.
RESNET18 = SearchSpace(
    name="resnet18", block="basic",
    widths=(64, 64, 64, 128, 128, 256, 256, 512, 512),
    candidates=tuple(range(1, 9)), num_downsamples=3, default=(3, 2, 2, 2),
    stem_in_stages=True, reference_base=0, stem="cifar", zero_init_residual=True)

# ResNet50 (bottleneck v1.5): stem + 16 bottleneck blocks whose widths follow the standard
# [3,4,6,3] positions (inner 64/128/256/512, output x4). 3 downsamplings; the first block
# always runs at the stem's resolution, so candidates are blocks 1..15: C(15,3) = 455
# compositions [p0,p1,p2,p3] of the 16 blocks (the paper's number; the reference's
# length-15 vector that drops the third downsampling when p3 = 1 is not copied),
# numbered 0..454 like the reference's list; standard [3,4,6,3] = 204. The stem is
# CIFAR's 3x3 below 128 px and ImageNet's 7x7/2 + max-pool (Food101, 224 px) above.
_STAGE_SIZES = (3, 4, 6, 3)
_INNER = tuple(w for w, n in zip((64, 128, 256, 512), _STAGE_SIZES) for _ in range(n))
RESNET50 = SearchSpace(
    name="resnet50", block="bottleneck",
    widths=(64,) + tuple(4 * w for w in _INNER), inner_widths=(0,) + _INNER,
    candidates=tuple(range(2, 17)), num_downsamples=3, default=_STAGE_SIZES,
    stem_in_stages=False, reference_base=0, stem="auto", zero_init_residual=True)

SPACES = {space.name: space for space in (RESNET20, RESNET18, RESNET50)}
