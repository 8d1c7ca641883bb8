"""Model zoo: ``create_model(name, num_classes, in_chans, **options)``.

The registry imports no model; this package imports the zoo (timm's way); plugins register through the
entry-point group ``robustbench_leak.models``.
"""

from .registry import check_options, create_model, get_entry, list_models, register_model
from .counting import count_flops, count_params
from .wrappers import Normalized
from . import resnet, spectral_nets, timm_models, tomen_cnn, vgg  # noqa: F401,E402  (the zoo registers itself)

__all__ = ["Normalized", "check_options", "count_flops", "count_params", "create_model", "get_entry",
           "list_models", "register_model"]
