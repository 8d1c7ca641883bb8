"""Model zoo: ``create_model(name, num_classes, in_chans, **options)``."""

from .registry import check_options, create_model, get_entry, list_models, register_model
from .counting import count_flops, count_params
from .wrappers import Normalized

__all__ = ["Normalized", "check_options", "count_flops", "count_params", "create_model", "get_entry",
           "list_models", "register_model"]
